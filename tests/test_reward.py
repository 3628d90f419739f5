"""Every branch of the Optima reward, on hand-written dialogues."""

import pytest

from harness.mas.dialogue import Utterance
from harness.synth.reward import RewardConfig, impersonates, reward, without_name

CFG = RewardConfig(lambda1=-0.6, lambda2=1.0, t_norm=100, min_tokens=40, max_tokens=2000)


def utt(speaker, text, tokens=30, truncated=False):
    return Utterance(speaker, text, "", tokens, 0, 0, truncated)


PLAIN = [utt("Alice", "Alice: X=1950 <A>Y</A>"), utt("Bob", "Bob: agreed <A>Y</A>")]


@pytest.mark.parametrize("name, task_score, utterances, nlls, expected", [
    # S_task + lambda1 * T / T_norm + lambda2 / max nll
    ("plain", 1.0, PLAIN, [2.0, 4.0], dict(task=1.0, token=-0.6 * 60 / 100, loss=1.0 / 4.0)),
    ("wrong answer", 0.0, PLAIN, [2.0, 4.0], dict(task=0.0, token=-0.36, loss=0.25)),
    ("partial F1 kept", 0.5, PLAIN, [1.0, 1.0], dict(task=0.5, token=-0.36, loss=1.0)),
    ("a truncated utterance: token term -1", 1.0,
     [PLAIN[0], utt("Bob", "Bob: long", truncated=True)], [2.0, 2.0], dict(task=1.0, token=-1.0, loss=0.5)),
    ("T <= 40: token term -1", 1.0, [utt("Alice", "Alice: a <A>Y</A>", 20), utt("Bob", "Bob: <A>Y</A>", 20)],
     [2.0, 2.0], dict(token=-1.0, loss=0.5)),
    ("T = 41 is not degenerate", 1.0, [utt("Alice", "Alice: a <A>Y</A>", 21), utt("Bob", "Bob: <A>Y</A>", 20)],
     [2.0, 2.0], dict(token=pytest.approx(-0.6 * 41 / 100), loss=0.5)),
    ("T > max_tokens: loss term -1", 1.0, [utt("Alice", "Alice: a", 1500), utt("Bob", "Bob: b", 600)],
     [2.0, 2.0], dict(token=pytest.approx(-0.6 * 2100 / 100), loss=-1.0)),
    ("empty dialogue: loss -1, token -1", 0.0, [], [], dict(task=0.0, token=-1.0, loss=-1.0)),
    ("a repeated utterance, names aside, case-insensitive: loss 0", 1.0,
     [utt("Alice", "Alice: <A>Paris</A>"), utt("Bob", "Bob: <a>paris</a>")], [2.0, 2.0], dict(loss=0.0)),
    ("impersonating the partner: S_task 0", 1.0,
     [utt("Alice", "Alice: X. Bob: yes <A>Y</A>"), utt("Bob", "Bob: <A>Y</A> ok")], [2.0, 2.0],
     dict(task=0.0, loss=0.5)),
    ("own name twice is impersonation too", 1.0,
     [utt("Alice", "Alice: X. Alice: <A>Y</A>"), utt("Bob", "Bob: <A>Y</A> ok")], [2.0, 2.0], dict(task=0.0)),
])
def test_reward_branches(name, task_score, utterances, nlls, expected):
    r = reward(task_score, utterances, nlls, CFG)
    for key, value in expected.items():
        assert getattr(r, key) == pytest.approx(value), key
    assert r.total == pytest.approx(r.task + r.token + r.loss)
    assert r.tokens == sum(u.completion_tokens for u in utterances)


def test_name_prefix_is_removed_as_a_prefix_not_a_character_set():
    # The reference's str.strip("Alice:") would also eat the leading "A" and trailing "e" here.
    assert without_name("Alice: Apple pie") == "Apple pie"
    assert without_name("Bob:Bobbie") == "Bobbie"
    assert without_name("Apple") == "Apple"


@pytest.mark.parametrize("text, expected", [
    ("Alice: hello <A>x</A>", False), ("hello", False), ("Alice: a Bob: b", True), ("Bob: a Bob: b", True),
])
def test_impersonation(text, expected):
    assert impersonates(text) is expected


@pytest.mark.parametrize("task, recipe", [  # (lambda1, lambda2, dpo_epsilon, dpo_beta, sft_epsilon)
    ("hotpotqa", (-0.6, 1.0, 0.4, 0.1, 0.5)),
    ("2wmh", (-0.6, 1.0, 0.4, 0.5, 0.5)),
    ("triviaqa", (-0.6, 1.0, 0.43, 0.7, 0.6)),
    ("cbt", (-0.6, 1.0, 0.4, 0.7, 0.5)),
    ("arc_c", (-0.5, 0.6, 0.45, 0.1, 0.6)),
    ("mmlu", (-0.6, 1.0, 0.45, 0.1, 0.7)),
    ("webwalker", (-0.6, 1.0, 0.4, 0.1, 0.5)),  # no reference recipe: QA's
])
def test_every_task_carries_its_reference_recipe(task, recipe):
    from dataclasses import astuple

    from harness.tasks import TASKS

    assert astuple(TASKS.get(task).recipe) == recipe