"""Rosters without a model: speakers follow the roster, each memory holds only its agent's slot, the
agreement rule (and where it equals the two-agent rule before rosters), frozen speakers on their own
backends, and pairs and SFT examples naming the right speaker."""

import itertools
import random

import pytest

from harness.backends.base import Backend, Completion
from harness.config import EvalConfig, SelectConfig, SynthConfig, build
from harness.errors import HarnessError
from harness.mas.dialogue import (CLOSING, Dialogue, DialogueConfig, Utterance, parse_answer, run_dialogues,
                                   same_answer, start)
from harness.mas.roster import DEBATE, INFORMATION_EXCHANGE, ROSTERS, roster_for, task_and_roster
from harness.mas.speakers import Speakers
from harness.synth.mcts import Tree
from harness.synth.pairs import PairRule, extract_pairs
from harness.synth.reward import RewardConfig, impersonates
from harness.tasks.base import Question
from harness.train.sft_data import build_sft_data

THREE = ROSTERS.get("information_exchange_3")
FACTS = ("fact A", "fact B", "fact C")
Q = Question("q1", "Who?", ("Paris",), tuple((f,) for f in FACTS))
CHOICE_Q = Question("q2", "Which?", ("red",), tuple((f,) for f in FACTS), options=("red", "blue"))


class Scripted(Backend):
    """Answers each request with `say(speaker name, request)` and records what it was asked; scores
    option `prefers` of every choice highest."""

    def __init__(self, say=lambda name, r: f"{name}: thinking", prefers: int = 0):
        super().__init__({"name": "scripted"}, None, 8)
        self.say, self.prefers = say, prefers
        self.asked: list[tuple[str, int]] = []  # (cache key, sampling seed) per request
        self.requests, self.choices = [], []

    def generate(self, requests, sampling, seed=0):
        self.requests += requests
        self.asked += zip([r.cache_key for r in requests], self.sample_seeds(requests, seed))
        return [Completion(self.say(speaker(r.messages), r), 5, 3, "stop") for r in requests]

    def loglikelihood(self, choices):
        self.choices += choices
        return [[(0.0 if i == self.prefers else -5.0, 1) for i in range(len(c.continuations))] for c in choices]

    def turn_nll(self, texts):
        return [1.0] * len(texts)


def speaker(messages) -> str:
    return messages[0]["content"].split()[2].rstrip(".,")  # "You are Alice, ..."


def test_three_informants_speak_in_turn_and_each_memory_holds_only_its_own_slot():
    backend = Scripted()
    [d] = run_dialogues(start([Q], THREE), backend, DialogueConfig(max_turns=7), seed=0)
    assert [u.speaker for u in d.utterances] == ["Alice", "Bob", "Carol"] * 2 + ["Alice"] and d.stop == "turn_cap"
    assert [r.cache_key[-1] for r in backend.requests] == list("0120120")
    for agent, (name, fact) in enumerate(zip(THREE.names, FACTS)):
        memory = d.messages(agent)
        system = memory[0]["content"]
        assert system.startswith(f"You are {name},") and "partners" in system
        assert fact in system and not any(other in system for other in FACTS if other != fact)
        roles = [m["role"] for m in memory[1:]]
        assert roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:]))  # strict alternation
        assert [m["content"] for m in memory if m["role"] == "assistant"] == [
            u.text for u in d.utterances if u.speaker == name]
    # The others' utterances since an agent last spoke are one user message.
    assert d.messages(2)[1] == {"role": "user", "content": "Alice: thinking\n\nBob: thinking"}
    assert d.messages(0)[3] == {"role": "user", "content": "Bob: thinking\n\nCarol: thinking"}
    assert d.tokens_by_agent() == {"Alice": 9, "Bob": 6, "Carol": 6}


def test_the_closing_turn_asks_the_next_of_three_once():
    backend = Scripted(say=lambda name, r: f"{name}: <A>Paris</A>" if CLOSING in str(r.messages) else f"{name}: hm")
    [d] = run_dialogues(start([Q], THREE), backend, DialogueConfig(max_turns=4, closing_turn=True), seed=0)
    assert [u.speaker for u in d.utterances] == ["Alice", "Bob", "Carol", "Alice", "Bob"]
    assert d.utterances[-1].closing and d.final_answer == "Paris" and d.stop == "turn_cap"
    bob = d.messages(1)
    assert bob[-2] == {"role": "user", "content": f"Carol: hm\n\nAlice: hm\n\n{CLOSING}"}
    assert CLOSING not in str(d.messages(0)) + str(d.messages(2))


def test_two_agent_rosters_are_todays_settings():
    assert INFORMATION_EXCHANGE.names == DEBATE.names == ("Alice", "Bob")
    assert (INFORMATION_EXCHANGE.slots, DEBATE.slots, THREE.slots) == (2, 0, 3)
    assert [roster_for(s).name for s in ("information_exchange", "debate")] == ["information_exchange", "debate"]
    alice, bob = INFORMATION_EXCHANGE.system_prompts(Question("q", "Q?", ("x",)))  # no context: none to share
    assert "your partner Bob." in alice and "(none: rely on what you know)" in bob


def say(d: Dialogue, speaker: str, answer: str, scored: bool = False) -> None:
    text = f"{speaker}: <A>{answer}</A>" if answer else f"{speaker}: hm"
    d.add(Utterance(speaker, text, parse_answer(text), 1, 0, 0, False, choice_logprobs=[0.0] if scored else None),
          max_turns=100)


def stop_turn(roster, answers, scored=False) -> int | None:
    """The utterance after which a dialogue of `answers` (round robin, "" for none) ends."""
    d = Dialogue(Question("q", "?", ("x",)), ("",) * len(roster.agents), roster=roster)
    for i, answer in enumerate(answers):
        say(d, roster.names[roster.speaker(i)], answer, scored)
        if d.done:
            return i
    return None


def before_rosters(answers) -> int | None:
    """The two-agent rule before rosters: two consecutive answer-bearing utterances agree."""
    final = ""
    for i, answer in enumerate(answers):
        if answer:
            if final and same_answer(answer, final):
                return i
            final = answer
    return None


SEQUENCES = [s for n in range(1, 7) for s in itertools.product(("", "x", "y"), repeat=n)]


@pytest.mark.parametrize("roster", [INFORMATION_EXCHANGE, DEBATE])
def test_choice_mode_agreement_is_the_rule_before_rosters(roster):
    for answers in itertools.product(("x", "y"), repeat=6):  # every utterance bears an answer
        assert stop_turn(roster, answers, scored=True) == before_rosters(answers), answers


def test_debate_generate_mode_agreement_is_the_rule_before_rosters_while_the_critic_does_not_answer():
    for answers in SEQUENCES:
        silent_critic = tuple(a if i % 2 == 0 else "" for i, a in enumerate(answers))
        assert stop_turn(DEBATE, silent_critic) == before_rosters(silent_critic), silent_critic
    # The critic giving one answer twice, the solver none in between, no longer ends it on purpose.
    assert before_rosters(["", "x", "", "x"]) == 3 and stop_turn(DEBATE, ["", "x", "", "x"]) is None


def test_information_exchange_generate_mode_needs_both_agents_to_give_the_answer():
    def both_give_it(answers):
        given = []  # (agent, answer) of the answer-bearing utterances
        for i, answer in enumerate(answers):
            if answer:
                given.append((i % 2, answer))
                if len(given) >= 2 and given[-1][0] != given[-2][0] and same_answer(given[-1][1], given[-2][1]):
                    return i
        return None

    for answers in SEQUENCES:
        assert stop_turn(INFORMATION_EXCHANGE, answers) == both_give_it(answers), answers
    # Where it differs from before: one agent repeating its own answer, its partner giving none.
    assert before_rosters(["x", "", "x"]) == 2 and stop_turn(INFORMATION_EXCHANGE, ["x", "", "x"]) is None
    assert stop_turn(INFORMATION_EXCHANGE, ["x", "", "x", "x"]) == 3


@pytest.mark.parametrize("answers, scored, ends", [
    (["x", "x", "x"], False, 2),  # all three give it
    (["x", "x", "y", "y", "y"], False, 4),
    (["x", "", "x", "x", "", "x"], False, None),  # Bob never gives it
    (["x", "", "x", "x", "x"], False, 4),  # the last three answers are everyone's
    (["x", "y", "x", "x", "x"], True, 4),  # choice: every utterance bears an answer
])
def test_agreement_among_three_needs_every_answering_agent(answers, scored, ends):
    assert stop_turn(THREE, answers, scored) == ends


def test_frozen_speakers_speak_with_their_own_backend_and_seeds():
    roster = THREE.with_speakers("Bob=frozen")
    assert roster.frozen_models == ("frozen",) and roster.policy_agents == (0, 2)
    policy, frozen = Scripted(prefers=0), Scripted(prefers=1)
    speakers = Speakers.for_roster(roster, policy, build={"frozen": frozen}.__getitem__)
    # Two dialogues a turn apart: every turn, one of them is Bob's, so each turn splits over the backends.
    dialogues = start([CHOICE_Q, CHOICE_Q], roster)
    say(dialogues[1], "Alice", "red", scored=True)
    for d in dialogues:
        d.adapter = "unit0"
    cfg = DialogueConfig(max_turns=5, temperature=0.7, answer_mode="choice")
    run_dialogues(dialogues, speakers, cfg, seed=3)
    assert {r.cache_key[-1] for r in frozen.requests} == {"1"}
    assert {r.cache_key[-1] for r in policy.requests} == {"0", "2"}
    assert {r.adapter for r in frozen.requests} == {None} and {r.adapter for r in policy.requests} == {"unit0"}
    assert {c.prefix for c in frozen.choices} == {"Bob:"} and {c.prefix for c in policy.choices} == {"Alice:", "Carol:"}
    for d in dialogues:  # each utterance's choice is its own model's
        assert {u.speaker: u.answer for u in d.utterances if u.text.endswith("thinking")} == {
            "Alice": "red", "Bob": "blue", "Carol": "red"}


def test_a_turn_split_over_backends_draws_the_seeds_of_one_call():
    cfg = DialogueConfig(max_turns=5, temperature=0.7)
    seeds = []
    for roster in (THREE.with_speakers("Bob=frozen"), THREE):
        backends = [Scripted(), Scripted()]
        speakers = Speakers.for_roster(roster, backends[0], build=lambda model: backends[1])
        dialogues = start([Q, Q], roster)
        say(dialogues[1], "Alice", "")  # a turn apart: every turn, one of them is Bob's
        for i, d in enumerate(dialogues):
            d.key = f"d{i}"
        run_dialogues(dialogues, speakers, cfg, seed=3)
        seeds.append(sorted(backends[0].asked + backends[1].asked))
        assert bool(backends[1].asked) == (roster is not THREE)
    assert seeds[0] == seeds[1] and len(seeds[0]) == 9


def test_pairs_name_their_speaker_and_skip_frozen_speakers():
    roster = THREE.with_speakers("Bob=frozen")
    t = Tree("t:q1", Q, roster, roster.system_prompts(Q), random.Random(0))
    parent, texts = 0, {}
    for name in roster.names:  # at each depth a good and a bad utterance; the good one goes on
        good, bad = (t.add(parent, Utterance(name, f"{name}: {k * 20}", "", 3, 0, 0, False), 0.1) for k in "gb")
        t.backup(good.id, 0.9)
        t.backup(bad.id, 0.1)
        texts[name], parent = good.text, good.id
    pairs = sorted(extract_pairs(t, PairRule(0.4, 0.2, keep_fraction=1.0)), key=lambda p: p["depth"])
    assert [(p["speaker"], p["depth"]) for p in pairs] == [("Alice", 0), ("Carol", 2)]
    carol = pairs[1]
    assert carol["chosen"] == texts["Carol"] and carol["prompt"][0]["content"].startswith("You are Carol,")
    assert carol["prompt"][1:] == [{"role": "user", "content": f"{texts['Alice']}\n\n{texts['Bob']}"}]


def test_sft_examples_are_the_policys_agents_own_turns():
    roster = THREE.with_speakers("Bob=frozen")
    [d] = start([Q], roster)
    for name, text in [("Alice", "Alice: A1"), ("Bob", "Bob: B1"), ("Carol", "Carol: C1 <A>Paris</A>"),
                       ("Alice", "Alice: <A>Paris</A>"), ("Bob", "Bob: <A>Paris</A>")]:
        d.add(Utterance(name, text, parse_answer(text), 5, 0, 0, False), max_turns=10)
    assert d.stop == "agreement"
    nll = {u.text: 1.0 for u in d.utterances}
    examples, _ = build_sft_data([[d]], nll, RewardConfig(-0.6, 1.0, 0, 10), "f1", None, 1.0, -10.0)
    assert [e["agent"] for e in examples] == ["Alice", "Carol"]
    for e in examples:
        own = [m["content"] for m in e["messages"] if m["role"] == "assistant"]
        assert own == [u.text for u in d.utterances if u.speaker == e["agent"]][:len(own)] and own
        assert e["messages"][0]["content"].startswith(f"You are {e['agent']},")
    assert any("Bob: B1" in m["content"] for m in examples[1]["messages"] if m["role"] == "user")


def test_impersonation_counts_every_agents_name():
    assert impersonates("Alice: x. Carol: y", THREE.names) and not impersonates("Alice: x. Carol: y")
    assert not impersonates("Carol: only mine", THREE.names)


@pytest.mark.parametrize("roster, speaker_models, message", [
    ("information_exchange_4", None, "unknown roster 'information_exchange_4'; did you mean"),
    ("information_exchange", "Carol=tiny-random",
     "roster information_exchange has no agent 'Carol' (agents: Alice, Bob)"),
    ("information_exchange", "Bob", "'Bob': expected agent=model"),
    ("information_exchange", "Bob=a,Bob=b", "agent Bob is given twice"),
    ("information_exchange", "Alice=a,Bob=b", "every agent of roster information_exchange is frozen"),
])
def test_bad_rosters_are_one_line(roster, speaker_models, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        roster_for("information_exchange", roster, speaker_models)


def test_roster_keys_pick_the_agents_and_the_tasks_slots():
    for cls in (EvalConfig, SynthConfig, SelectConfig):
        cfg = build(cls, overrides=["roster=information_exchange_3", "speaker_models=Bob=tiny-random"])
        assert (cfg.roster, cfg.speaker_models) == ("information_exchange_3", "Bob=tiny-random")
    task, roster = task_and_roster(build(SynthConfig, overrides=["task=hotpotqa", "roster=information_exchange_3",
                                                                  "speaker_models=Bob=tiny-random"]))
    assert task.slots == 3 and roster.names == ("Alice", "Bob", "Carol") and roster.frozen_models == ("tiny-random",)
    task, roster = task_and_roster(build(SynthConfig, overrides=["task=arc_c"]))
    assert roster is DEBATE and task.slots == 0
    with pytest.raises(HarnessError, match="is dealt into 2 slots, but roster information_exchange_3 has 3"):
        THREE.system_prompts(Question("q", "?", ("x",), (("a",), ("b",))))
