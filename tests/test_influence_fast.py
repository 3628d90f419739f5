"""The fast influence path complete: answer_mode=choice (options scored again under each unit's
weights), certification of the drafts a step cannot change (with its audit), and the units' steps
from shared passes. Tiny models only."""

import json
import re
from dataclasses import replace

import pytest
import torch

from harness.backends.base import Choice
from harness.config import SelectConfig, build
from harness.dits.influence import FastPath, ReferencePath, path_for, prepare
from harness.dits.influence.certify import audit_sample
from harness.dits.influence.choice_rescore import TreeScorer
from harness.dits.influence.fast_path import same_dialogue
from harness.dits.influence.reference_path import STEP_OPTIMIZERS
from harness.dits.influence.unit_steps import UnitGradients, apply_step
from harness.errors import HarnessError
from harness.mas.dialogue import Dialogue
from test_dits import write_pairs

SMALL = {"selector": "dits", "lora": {"r": 4, "alpha": 4}, "max_new_tokens": 16, "warmup_steps": 1, "warmup_batch": 2}


def choice_pairs(path):
    return [dict(json.loads(line), answer_mode="choice") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def arc_pairs(tmp_path_factory):
    return choice_pairs(write_pairs(tmp_path_factory.mktemp("fast_arc"), "arc_c"))


@pytest.fixture(scope="module")
def cbt_pairs(tmp_path_factory):
    return choice_pairs(write_pairs(tmp_path_factory.mktemp("fast_cbt"), "cbt"))


def config(**values) -> SelectConfig:
    return build(SelectConfig, overrides={**SMALL, **values})


def fast_path(pairs, **values) -> FastPath:
    cfg = config(**values)
    return FastPath(pairs, cfg, *prepare(pairs, cfg))


def with_answers(path):
    """`path.score` also records each unit's dialogues' answers, utterance by utterance."""
    answers, score = [], path.score

    def recording(dialogues):
        answers.append([[u.answer for u in d.utterances] for d in dialogues])
        return score(dialogues)

    path.score = recording
    return answers


def changed(path, outcome, resumed, i: int) -> bool:
    """Whether draft i came out otherwise under the current weights (`check_drafts`'s outcome)."""
    return any(r is outcome[i] for r in resumed) or not same_dialogue(outcome[i], path.draft[i])


def unit_weights(path, theta_star, unit: list[int], eta: float) -> None:
    """The policy's adapter at theta' of `unit` (its gradient from the shared passes) and the checker merged to it."""
    path.prepare_units(theta_star, [unit])
    apply_step(path.params, theta_star, path.gradients.views(path.unit_grads[tuple(unit)]),
               STEP_OPTIMIZERS[path.cfg.influence.step_optimizer], eta)
    path.merge()
    path.opening_kv = [path.encode_opening(ids) for ids in path.openings]


# -- the units' steps from shared passes ---------------------------------------------------------

@pytest.mark.parametrize("optimizer", sorted(STEP_OPTIMIZERS))
@pytest.mark.parametrize("micro_batch", [1, 3])
def test_batched_unit_steps_equal_the_loops(arc_pairs, optimizer, micro_batch):
    path = fast_path(arc_pairs, validation_size=2, step_optimizer=optimizer, micro_batch=micro_batch)
    theta_star = path.warm_up()
    units, eta = [[0, 1], [2, 3, 4], [5], [1, 5]], 0.01  # a pair in two units too
    looped = []
    for unit in units:
        path.step_from(theta_star, unit, eta)  # the loop: restore, a fresh optimizer's step on the unit
        looped.append([p.detach() - t for p, t in zip(path.params, theta_star)])
    path.restore(theta_star)
    gradients = UnitGradients(path.model, path.params)
    grads = gradients(units, lambda pairs: path.pair_losses(pairs, path.unit_logps), micro_batch)
    assert all(torch.equal(p, t) for p, t in zip(path.params, theta_star))  # the passes move no weight
    assert all(p.grad is None and p.requires_grad for p in path.params) and not path.model.training
    for row, loop in zip(grads, looped):
        apply_step(path.params, theta_star, gradients.views(row), STEP_OPTIMIZERS[optimizer], eta)
        batched = [p.detach() - t for p, t in zip(path.params, theta_star)]
        scale = max(x.abs().max().item() for x in loop)
        assert scale > 0  # the step moves the adapter: comparing means something
        # The forward passes are the loop's. With one pair a pass so is the sum (equal to the bit where
        # measured); passes of several pairs split a unit elsewhere than the loop's micro-batches and
        # sum in another order: float32 rounding, which adamw's g / (|g| + 1e-8) magnifies where g is
        # near 0 (measured: 2.6e-6 of a 1e-2 step)
        tolerance = (1e-6 if micro_batch == 1 else 1e-3) * scale
        assert all(torch.allclose(b, a, rtol=0, atol=tolerance) for b, a in zip(batched, loop))


# -- answer_mode=choice ---------------------------------------------------------------------------

def test_choice_mode_takes_the_fast_path(arc_pairs):
    assert path_for(config(), arc_pairs) == "fast"
    assert path_for(config(influence={"path": "reference"}), arc_pairs) == "reference"


@pytest.mark.parametrize("knob, value, message", [
    ("certify_audit", 1.5, "influence.certify_audit must be in [0, 1], got 1.5"),
    ("certify_safety", 0, "influence.certify_safety must be positive, got 0"),
    ("certify_margins", 0, "influence.certify_margins must be at least 1, got 0"),
])
def test_bad_certify_knobs_are_one_line(knob, value, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        config(**{knob: value})


def test_choice_mode_fast_path_gives_the_reference_paths_influence(arc_pairs):
    """Per unit and per dialogue, utterance by utterance, the fast path's answers are the reference
    path's, at each of three etas. Over them F moves from unit to unit, and answers of turns that held
    move, so that some dialogues end sooner or run on; at which eta depends on the tiny model's fit,
    which differs from one CPU to another."""
    seen = {"F moved": False, "choices changed": False, "ended sooner or ran on": False}
    for eta in (0.06, 0.12, 0.24):
        facts = {}
        for cls in (ReferencePath, FastPath):
            cfg = build(SelectConfig, "smoke", {"selector": "dits", "validation_size": 12, "unit_size": 1, "eta": eta,
                                                "influence": {"path": cls.name}})
            path = cls(arc_pairs, cfg, *prepare(arc_pairs, cfg))
            answers = with_answers(path)
            facts[cls.name] = (path.run(), answers)
        (ref, ref_answers), (fast, fast_answers) = facts["reference"], facts["fast"]
        drafts = fast.drafts
        assert fast.path == "fast" and fast.f_before == ref.f_before and fast_answers[0] == ref_answers[0]
        assert drafts["verified_dialogues"] + drafts["decoded_dialogues"] == 12 * len(ref.units)
        assert drafts["wrong_certifications"] == 0
        # Every unit's dialogues answer alike, utterance by utterance, but within a counted near-tie
        differing = sum(a != b for a, b in zip(ref_answers[1:], fast_answers[1:]))
        assert differing <= drafts["near_ties"]
        same = [a == b for a, b in zip(ref_answers[1:], fast_answers[1:])]
        assert all(f == g for f, g, s in zip(ref.f_after, fast.f_after, same) if s)
        assert all(x == y for x, y, s in zip(ref.items_after, fast.items_after, same) if s)
        seen["F moved"] |= len(set(ref.f_after)) > 1
        seen["choices changed"] |= drafts["changed_choices"] > 0
        seen["ended sooner or ran on"] |= drafts["ended_sooner"] + drafts["ran_longer"] > 0
    assert all(seen.values()), seen  # so that the agreement means something


def test_rescored_options_equal_the_backends_scores(cbt_pairs):
    """The tree scorer, on the checks' keys/values, gives every held utterance's options the
    log-likelihoods the backend gives them encoding the context afresh (CBT: ten options that open alike)."""
    path = fast_path(cbt_pairs, validation_size=3)
    theta_star = path.warm_up()
    path.theta_star_dialogues()
    unit_weights(path, theta_star, [0, 1], 1e-3)  # a step small enough that the drafts mostly hold
    scorer = TreeScorer(path.checker, path.tokenizer, rows_per_pass=2, account=path.account)
    choices = []
    for d, turns in zip(path.draft, path.draft_turns):
        first, computed = path.divergence(turns)
        for agent, held in computed.items():
            for sequence, kv in held:
                scorer.register(d.cache_key(agent), sequence, kv)
        for t, u in enumerate(d.utterances[:first]):
            memory = Dialogue(d.question, d.systems, d.utterances[:t], key=d.key, roster=d.roster).messages(
                d.roster.speaker(t))
            choices.append(Choice(memory + [{"role": "assistant", "content": u.text}], d.question.continuations,
                                  prefix=f"{u.speaker}:", cache_key=d.cache_key(d.roster.speaker(t))))
    assert len(choices) >= 3 and len(choices[0].continuations) == 10
    trees = scorer.loglikelihood(None, choices)
    fresh = path.backend.loglikelihood([replace(c, cache_key=None) for c in choices])
    assert path.account["rescore_passes"] >= 2  # rows of several passes, padded to each pass's widest
    assert path.account["rescored_tokens"] < sum(n for scored in fresh for _, n in scored)  # shared openings
    for tree, backend in zip(trees, fresh):
        assert [n for _, n in tree] == [n for _, n in backend]
        assert max(abs(a - b) for (a, _), (b, _) in zip(tree, backend)) < 1e-3  # float32 sums of ~20 tokens


def test_answers_scored_again_end_a_dialogue_sooner_or_let_it_run_on(arc_pairs):
    """`settle` replays a draft's held turns with their new answers: agreement may come sooner, or not
    where theta*'s came (the dialogue then decodes on), or a closing instruction may differ."""
    path = fast_path(arc_pairs, validation_size=1)
    path.warm_up()
    d = path.theta_star_dialogues()[0]
    a, b = d.question.options[:2]
    names = path.roster.names

    def said(*answers, closing=False):
        scores = [0.0] * len(d.question.options)
        return [replace(d.utterances[0], speaker=names[t % 2], answer=x, choice_logprobs=scores, closing=closing)
                for t, x in enumerate(answers)]

    again, decode = path.settle(d, said(a, b, b), {})
    assert not decode and again.stop == "agreement" and len(again.utterances) == 3
    again, decode = path.settle(d, said(a, a, b), {})  # they agree at the second turn now
    assert not decode and len(again.utterances) == 2
    again, decode = path.settle(d, said(a, b), {})  # no agreement where the draft ended: decode on
    assert decode and not again.done and len(again.utterances) == 2
    again, decode = path.settle(d, said(a, closing=True), {})  # the draft's turn had an instruction this one lacks
    assert decode and again.utterances == []


# -- certification ---------------------------------------------------------------------------------

def test_the_audit_sample_is_seeded_and_never_empty():
    certified = list(range(10))
    sample = audit_sample(certified, 0.3, 0, (1, 2))
    assert len(sample) == 3 and set(sample) <= set(certified) and sample == audit_sample(certified, 0.3, 0, (1, 2))
    assert {tuple(audit_sample(certified, 0.3, seed, (1, 2))) for seed in range(5)} != {tuple(sample)}
    assert len(audit_sample([4], 0.01, 0, (1,))) == 1 and audit_sample(certified, 0.0, 0, (1,)) == []
    assert audit_sample([], 0.5, 0, (1,)) == []


def test_a_step_that_flips_a_token_is_never_certified(arc_pairs):
    """A step along a draft's smallest token margin's gradient, grown until the exact check finds a
    token flipped: the certificate refuses every step that changes the dialogue (a token or an answer)."""
    from harness.backends.decoding import NEAR_TIE

    # eta: the least rate the certifier plans for (this test's steps are far larger or smaller)
    path = fast_path(arc_pairs, validation_size=4, step_optimizer="sgd", certify_margins=4, certify_safety=1.0,
                     eta=1e-9)
    theta_star = path.warm_up()
    path.theta_star_dialogues()
    path.prepare_units(theta_star, [[0]])
    certifier = path.certifier
    # a dialogue no near-tie keeps from any certificate, and its smallest token margin
    d = next(i for i, (smallest, _) in enumerate(certifier.margins) if smallest[0].value > NEAR_TIE)
    margin = next(m for m in certifier.margins[d][0] if m.chain is not None)
    with torch.enable_grad():
        g = certifier.gradients(d, [margin])[0]
    certifier.add_units([("along",)], g.unsqueeze(0))  # sgd: the step is -eta * g
    flipped = []
    for scale in (0.25, 1, 4, 16, 64):
        eta = scale * margin.value / g.dot(g).item()  # first order moves the margin by -scale * margin
        apply_step(path.params, theta_star, path.gradients.views(g), STEP_OPTIMIZERS["sgd"], eta)
        outcome, resumed = path.check_drafts()
        assert not (changed(path, outcome, resumed, d) and d in certifier.certified(("along",), eta)), scale
        flipped.append(path.divergence(path.draft_turns[d])[0] is not None)  # a token of its own
    assert any(flipped)  # the construction did flip a token
    assert d in certifier.certified(("along",), 1e-6 * margin.value / g.dot(g).item())  # a tiny step is fine


def test_certified_dialogues_are_unchanged_under_a_small_step(arc_pairs):
    path = fast_path(arc_pairs, validation_size=6, unit_size=1, eta=5e-4)
    theta_star = path.warm_up()
    path.theta_star_dialogues()
    units = [[i] for i in range(4)]
    path.prepare_units(theta_star, units)
    assert path.account["certify_seconds"] > 0 and path.unit_seconds["certify"] == path.account["certify_seconds"]
    certified_in_all = 0
    for unit in units:
        certified = path.certifier.certified(tuple(unit), 5e-4)
        certified_in_all += len(certified)
        unit_weights(path, theta_star, unit, 5e-4)
        outcome, resumed = path.check_drafts()  # every draft checked exactly
        assert not any(changed(path, outcome, resumed, i) for i in certified)
    assert certified_in_all > 0


def test_the_audit_counts_the_wrong_certifications_a_tiny_safety_factor_makes(arc_pairs):
    """Certificates at safety 1e-9 on a large step are often wrong; with every certified draft
    audited the audit counts exactly those, and F is the exact path's."""
    knobs = dict(validation_size=6, unit_size=1, eta=0.1)
    runs = {}
    for certify in (False, True):
        path = fast_path(arc_pairs, **knobs, certify=certify, certify_safety=1e-9, certify_audit=1.0)
        start = path.begin()
        runs[certify] = (path, start, path.unit_scores(start.theta_star, start.units, start.eta, start.answers_before))
    (exact, start, exact_scores), (audited, _, audited_scores) = runs[False], runs[True]
    account = audited.account
    assert account["certified_dialogues"] == account["audited_dialogues"] > 0
    wrong = 0
    for unit in start.units:  # which certified drafts the unit's step does change
        certified = audited.certifier.certified(tuple(unit), start.eta)
        unit_weights(exact, start.theta_star, unit, start.eta)
        outcome, resumed = exact.check_drafts()
        wrong += sum(changed(exact, outcome, resumed, i) for i in certified)
    assert account["wrong_certifications"] == wrong > 0
    assert [f for f, _, _ in audited_scores] == [f for f, _, _ in exact_scores]
    assert exact.account["certified_dialogues"] == 0 and exact.certifier is None


def test_a_choice_mode_selection_takes_the_fast_path_and_records_its_account(arc_pairs, tmp_path):
    from harness.cli import main

    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in arc_pairs))
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(tmp_path / "sel"),
                 "--config", "smoke", "max_turns=4", "certify_audit=1"]) == 0
    facts = json.loads((tmp_path / "sel" / "run_spec.json").read_text())["selector_facts"]
    assert facts["answer_mode"] == "choice" and facts["influence_path"] == "fast"
    drafts = facts["drafts"]
    assert drafts["rescored_utterances"] > 0 and drafts["rescore_passes"] > 0
    assert drafts["audited_dialogues"] == drafts["certified_dialogues"] and drafts["wrong_certifications"] == 0
    assert drafts["certify_gradients"] > 0 and facts["unit_seconds"]["certify"] == drafts["certify_seconds"] > 0
