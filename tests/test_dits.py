"""DITS influence, reference path, end to end on tiny-fitted with pairs written for the test."""

import json

import pytest

from harness import models
from harness.cli import main
from harness.config import SelectConfig, build
from harness.dits import influence as influence_mod
from harness.dits.influence import make_units
from harness.errors import HarnessError
from harness.selection import select


def select_config(**values) -> SelectConfig:
    """A select config as the grammar composes it (`validation_size` reaches influence's)."""
    return build(SelectConfig, overrides=values)


KNOBS = ["--config", "smoke"]  # V = 4, units of 2 pairs, 2 warm-up steps, eta 1e-2, LoRA r 4
THREE = "information_exchange_3"  # Alice, Bob and Carol


def write_pairs(directory, task_name: str, roster: str | None = None):
    """Six pairs on train questions, grown by tiny-fitted: at Alice's first turn in the roster's
    dialogue (default: the task's setting's), the gold answer over a wrong option (or, without
    options, the next question's answer)."""
    from harness.mas.dialogue import start
    from harness.mas.roster import roster_for
    from harness.tasks import get_task

    team = roster_for(get_task(task_name).setting, roster)
    task = get_task(task_name, slots=team.slots)
    _, _, info = models.load("tiny-fitted")
    questions = task.load("train")[:7]
    rows = []
    for i, d in enumerate(start(questions[:6], team)):
        q = d.question
        wrong = next(o for o in q.options if o != q.golds[0]) if q.options else questions[i + 1].golds[0]
        rows.append({"pair_id": f"{task_name}:{q.id}/n0", "question_id": q.id, "task": task_name,
                     "policy": {"name": "tiny-fitted", "sha256": info["sha256"]}, "prompt": d.messages(0),
                     "chosen": f"Alice: <A>{q.golds[0]}</A>", "rejected": f"Alice: <A>{wrong}</A>",
                     "q_chosen": 0.5 + 0.1 * i, "q_rejected": 0.1})
    path = directory / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    # Debate: tiny-fitted picks options well above zero on unseen questions, so the validation
    # metric can move either way after a step.
    return write_pairs(tmp_path_factory.mktemp("dits"), "arc_c")


@pytest.fixture(scope="module")
def three_agent_pairs(tmp_path_factory):
    # ARC-C again, for the metric tiny-fitted moves there: three informants, each without a context to read
    return write_pairs(tmp_path_factory.mktemp("dits3"), "arc_c", THREE)


def test_units_are_seeded_blocks_of_a_shuffle():
    units = make_units(11, 5, seed=3)
    assert [len(u) for u in units] == [5, 5, 1]
    assert sorted(i for u in units for i in u) == list(range(11))
    assert make_units(11, 5, seed=3) == units != make_units(11, 5, seed=4)


def test_dits_scores_every_pair_and_gamma_runs_share_one_estimate(pairs_file, tmp_path, monkeypatch):
    out = tmp_path / "g1"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--gamma", "1", "--out", str(out),
                 *KNOBS]) == 0
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    spec = json.loads((out / "run_spec.json").read_text())
    facts = spec["selector_facts"]
    assert len(rows) == 6 and sum(r["selected"] for r in rows) == 3
    assert len(facts["units"]) == 3 and len(facts["f_after"]) == 3
    # The unit steps move the policy: some validation answers change.
    assert facts["resolution"]["changed_answers_max"] > 0
    # theta*'s validation dialogues, then one set per unit
    assert facts["validation_dialogues"] == 4 * (1 + 3) and not facts["reused_estimate"]
    for r, f in zip(rows, facts["reference_rank_value"]):
        assert r["I"] == pytest.approx((f - facts["f_before"]) / spec["config"]["influence"]["eta"])
    # gamma 0 reuses the cached estimate: no model is loaded again.
    monkeypatch.setattr(influence_mod.ReferencePath, "run", lambda self: pytest.fail("estimate not reused"))
    monkeypatch.setattr(influence_mod.ReferencePath, "__init__", lambda *a: pytest.fail("estimate not reused"))
    out0 = tmp_path / "g0"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--gamma", "0", "--out", str(out0),
                 *KNOBS]) == 0
    rows0 = [json.loads(line) for line in (out0 / "scores.jsonl").read_text().splitlines()]
    assert [r["I"] for r in rows0] == [r["I"] for r in rows]
    assert [r["H"] - r["Q"] for r in rows] == pytest.approx([r["H"] for r in rows0])
    assert json.loads((out0 / "run_spec.json").read_text())["selector_facts"]["reused_estimate"]


@pytest.mark.parametrize("overrides, message", [
    (["val_split=train"], "of the 4 train questions are training questions of the pairs"),
    (["model=tiny-random"], "the pairs were grown by tiny-fitted"),
    (["step_optimizer=adam"], "step_optimizer must be one of adamw, sgd"),
    (["eta=0"], "eta must be positive"),
    (["decode_lookahead=-1"], "decode_lookahead must be at least 0, got -1"),
    (["backend=vllm"], "influence estimates run on the hf backend"),
    (["speaker_models=Bob=tiny-random", "influence.path=fast"], "speaker_models needs influence.path=reference"),
])
def test_bad_influence_input_is_one_line(pairs_file, tmp_path, capsys, overrides, message):
    models.resolve("tiny-random")  # built beforehand: a first build logs its progress on stderr,
    capsys.readouterr()  # which is not the line under test
    out = tmp_path / "sel"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(out), *KNOBS,
                 *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists()


def test_overlap_is_allowed_on_request(pairs_file):
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    cfg = select_config(selector="dits", val_split="train", allow_overlap=True, validation_size=2, unit_size=6,
                        warmup_steps=1, warmup_batch=2, lora={"r": 4, "alpha": 4}, max_new_tokens=16)
    chosen, rows, _ = select(pairs, cfg)
    assert len(chosen) == 3 and len({r["I"] for r in rows}) == 1  # one unit: one influence value
    with pytest.raises(HarnessError, match="training questions"):
        select(pairs, select_config(selector="dits", val_split="train", validation_size=2))


def test_eta_auto_grows_eta_until_the_median_unit_changes_the_target_share(pairs_file, tmp_path):
    out = tmp_path / "auto"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(out), *KNOBS,
                 "--eta", "auto", "eta=1e-7", "eta_calibration_units=2", "eta_target_share=0.5"]) == 0
    spec = json.loads((out / "run_spec.json").read_text())
    facts = spec["selector_facts"]
    trials = facts["eta_calibration"]
    assert [t["eta"] for t in trials] == pytest.approx([1e-7 * 3 ** k for k in range(len(trials))])
    assert all(len(t["changed_scores"]) == 2 for t in trials)
    # the first eta that reaches the target is taken (or the last tried), and the influence uses it
    reached = [t for t in trials if t["median_share"] >= 0.5]
    assert facts["eta"] == (reached[0] if reached else trials[-1])["eta"]
    assert all(t["median_share"] < 0.5 for t in trials[:-1]) and trials[0]["median_share"] < 0.5  # 1e-7 moves nothing
    # theta*, each trial's calibration units, then every unit
    assert facts["validation_dialogues"] == 4 * (1 + 2 * len(trials) + len(facts["units"]))
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    for r, f in zip(rows, facts["reference_rank_value"]):
        assert r["I"] == pytest.approx((f - facts["f_before"]) / facts["eta"])


def test_loss_influence_scores_units_by_the_validation_loss_they_remove(pairs_file, tmp_path):
    out = tmp_path / "loss"
    assert main(["select", "--selector", "loss_influence", "--pairs", str(pairs_file), "--out", str(out),
                 *KNOBS]) == 0
    spec = json.loads((out / "run_spec.json").read_text())
    facts = spec["selector_facts"]
    assert facts["influence"] == "loss" and spec["run_id"].startswith("select:selector=loss_influence")
    # a DPO loss at theta* (after the warm-up), which every unit's step changes
    assert 0 < facts["f_before"] < 5 and all(f != facts["f_before"] for f in facts["f_after"])
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    for r, f in zip(rows, facts["reference_rank_value"]):
        assert r["I"] == pytest.approx((facts["f_before"] - f) / facts["eta"])
    assert len({r["I"] for r in rows}) == len(facts["units"])  # one value per unit, none tied
    # only theta*'s dialogues (for the validation pairs); no answers after a step to count as changed
    assert facts["validation_dialogues"] == 4 and "changed_answers_median" not in facts["resolution"]


def test_analyze_influence_ranks_estimates_against_the_true_gain(pairs_file, tmp_path, capsys):
    from scipy import stats

    out = tmp_path / "analysis"
    assert main(["analyze", "influence", "--pairs", str(pairs_file), "--units", "6", "--steps", "8",
                 "--eval-size", "12", "--out", str(out), *KNOBS, "unit_size=1"]) == 0
    assert "Spearman with the true gain (6 units)" in capsys.readouterr().out
    result = json.loads((out / "analysis.json").read_text())
    rows = [json.loads(line) for line in (out / "units.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and sorted(i for r in rows for i in r["unit"]) == list(range(6))
    assert set(result["evaluation_ids"]).isdisjoint(result["validation_ids"])
    # tiny-fitted follows the CPU's kernels: on one machine six units rank differently, on another the
    # gains tie; a constant side has no rank and is None, never a made-up number
    for name in ("metric_influence", "loss_influence", "q"):
        xs, gains = [r[name] for r in rows], [r["true_gain"] for r in rows]
        if len(set(xs)) < 2 or len(set(gains)) < 2:
            assert result["spearman"][name] is None
        else:
            assert result["spearman"][name] == pytest.approx(stats.spearmanr(xs, gains).statistic)
    assert (out / "influence_vs_gain.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["analyze", "influence", "--pairs", str(pairs_file), "--units", "3", "--eval-split", "validation",
                 "--out", str(tmp_path / "bad"), *KNOBS]) == 2
    assert "must exist and be disjoint" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_response_logps_scores_only_the_responses_of_a_padded_batch():
    import torch

    from harness.screen.dpo import EncodedPair, response_logps

    model, tokenizer, _ = models.load("tiny-fitted")
    pairs = [EncodedPair([5, 6, 7, 8], [9, 10], [11, 12, 13]), EncodedPair([5, 6], [9, 10, 14, 15], [11])]
    got = response_logps(model, pairs, tokenizer.pad_token_id)
    with torch.no_grad():  # one unpadded sequence at a time, every position's logits
        want = [[sum(torch.log_softmax(model(input_ids=torch.tensor([p.prompt + r])).logits[0].float(), -1)[
            len(p.prompt) - 1 + i, t].item() for i, t in enumerate(r)) for r in (p.chosen, p.rejected)] for p in pairs]
    assert torch.allclose(got, torch.tensor(want), atol=1e-4)


def test_shared_prompt_logps_equal_the_padded_batchs_with_their_gradient():
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.screen.dpo import EncodedPair, response_logps, shared_prompt_logps

    model, tokenizer, _ = models.load("tiny-fitted")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero, where the gradient of A is zero too
            p.data.normal_(0, 0.1)
    pairs = [EncodedPair([5, 6, 7, 8, 9], [9, 10], [11, 12, 13, 16]), EncodedPair([5, 6], [9, 10, 14, 15], [11])]
    results = []
    for logps in (lambda: response_logps(model, pairs, tokenizer.pad_token_id),
                  lambda: shared_prompt_logps(model, pairs)):
        model.zero_grad()
        values = logps()
        (values * torch.tensor([[1.0, -2.0]])).sum().backward()
        results.append((values.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (padded, padded_grads), (shared, shared_grads) = results
    assert torch.allclose(padded, shared, atol=1e-4)
    scale = max(g.abs().max().item() for g in padded_grads)
    assert scale > 1e-3  # the gradient is not zero: comparing it means something
    # float32 sums in another order: 1.4e-4 at a scale of 16 measured on tiny-fitted
    assert all(torch.allclose(a, b, rtol=0, atol=1e-4 * scale) for a, b in zip(padded_grads, shared_grads))


@pytest.mark.parametrize("pairs, roster", [("pairs_file", []), ("three_agent_pairs", [f"roster={THREE}"])],
                         ids=["two_agents", "three_agents"])
def test_fast_path_gives_the_reference_paths_influence(pairs, roster, request, tmp_path):
    pairs_file = request.getfixturevalue(pairs)
    facts = {}
    for path in ("reference", "fast"):
        out = tmp_path / path
        # 12 questions, one pair a unit and Optima's 10 turns, so the units' F values differ (with 4
        # questions and units of 2 pairs the three units tied on an AMD AVX2 CPU; at the smoke preset's
        # 6 turns, on an AVX-512 one)
        assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(out), *KNOBS,
                     "validation_size=12", "unit_size=1", "max_turns=10", f"influence.path={path}", *roster]) == 0
        facts[path] = json.loads((out / "run_spec.json").read_text())["selector_facts"]
    ref, fast = facts["reference"], facts["fast"]
    assert len(set(ref["f_after"])) > 1  # the units differ, so agreement means something
    drafts = fast["drafts"]
    assert drafts["verified_dialogues"] + drafts["decoded_dialogues"] == 12 * len(ref["units"])
    assert drafts["verified_dialogues"] > 0 and drafts["decoded_dialogues"] > 0  # both branches ran
    assert fast["f_before"] == ref["f_before"]  # theta*'s dialogues are decoded the same way by both
    # a unit's F can only differ through an argmax within a near-tie, which the fast path counts
    differing = sum(a != b for a, b in zip(fast["f_after"], ref["f_after"]))
    assert differing <= drafts["near_ties"]
    if drafts["near_ties"] == 0:
        assert fast["resolution"] == ref["resolution"]
    assert ref["drafts"] == {}


@pytest.mark.parametrize("pairs, roster", [("pairs_file", None), ("three_agent_pairs", THREE)],
                         ids=["two_agents", "three_agents"])
def test_a_draft_checked_on_its_own_weights_holds(pairs, roster, request):
    from harness.dits.influence import FastPath, prepare

    pairs = [json.loads(line) for line in request.getfixturevalue(pairs).read_text().splitlines()]
    cfg = select_config(selector="dits", validation_size=4, lora={"r": 4, "alpha": 4}, max_new_tokens=16, roster=roster)
    path = FastPath(pairs, cfg, *prepare(pairs, cfg))
    draft = path.theta_star_dialogues()
    names = path.roster.names
    assert len(names) == (3 if roster else 2) and len(path.openings) == len(names)
    for d, turns in zip(draft, path.draft_turns):  # each turn is its speaker's, in roster order
        assert [u.speaker for u in d.utterances] == [names[t % len(names)] for t in range(len(turns))]
        # an utterance's text is its tokens as the backend decodes them: special tokens left out
        assert [path.tokenizer.decode(t.tokens, skip_special_tokens=True) for t in turns] == [u.text for u in d.utterances]
    dialogues, resumed = path.check_drafts()
    assert dialogues == draft and resumed == []
    assert path.account["verified_dialogues"] == 4 and path.account["decoded_dialogues"] == 0
    assert path.account["checked_positions"] == sum(len(t.positions()) for d in path.draft_turns for t in d) > 0
    # one changed token in a draft turn is found at that turn
    turns = path.draft_turns[0]
    t = max(range(len(turns)), key=lambda i: len(turns[i].tokens))
    turns[t].tokens[-1] = (turns[t].tokens[-1] + 1) % path.tokenizer.vocab_size
    assert path.divergence(turns)[0] == t


def test_a_run_in_parts_gives_the_run_and_calls_between_after_each_unit(pairs_file):
    from harness.dits.influence import FastPath, prepare

    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    cfg = select_config(selector="dits", validation_size=4, unit_size=2, warmup_steps=1, warmup_batch=2,
                        lora={"r": 4, "alpha": 4}, max_new_tokens=16, influence={"path": "fast"})
    whole = FastPath(pairs, cfg, *prepare(pairs, cfg)).run()
    path = FastPath(pairs, cfg, *prepare(pairs, cfg))
    start, calls = path.begin(), []
    scored = path.unit_scores(start.theta_star, start.units, start.eta, start.answers_before,
                              between=lambda i: calls.append((i, path.account["draft_turns"])))
    parts = path.finish(start, scored, 0.0)
    per_unit = sum(map(len, path.draft_turns))  # the turns a unit's checks read
    assert calls == [(i, per_unit * (i + 1)) for i in range(len(start.units))]  # after each unit's checks
    assert (parts.f_before, parts.f_after, parts.changed_answers) == (whole.f_before, whole.f_after,
                                                                      whole.changed_answers)


def test_the_reference_path_speaks_with_the_rosters_frozen_model(pairs_file, tmp_path):
    from harness.dits.influence import ReferencePath, prepare

    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    cfg = select_config(selector="dits", validation_size=2, unit_size=6, warmup_steps=1, warmup_batch=2, max_turns=4,
                        lora={"r": 4, "alpha": 4}, max_new_tokens=16, speaker_models="Alice=tiny-random",
                        influence={"path": "reference"})
    path = ReferencePath(pairs, cfg, *prepare(pairs, cfg))
    frozen = path.speakers.frozen["tiny-random"]
    assert frozen is not path.backend  # no unit's step reaches the frozen speaker
    dialogues = path.dialogues()
    spoken = [u.speaker for d in dialogues for u in d.utterances]
    assert frozen.usage.requests == spoken.count("Alice") > 0 and path.backend.usage.requests == spoken.count("Bob") > 0
    # Loss influence's validation pairs take the policy's first turn: Bob's (the critic's, no answer), after Alice's
    decode = path.tokenizer.decode
    for pair, d in zip(path.validation_pairs(dialogues), dialogues, strict=True):
        assert decode(pair.prompt).startswith(f"<|im_start|>system\n{d.systems[1]}")
        assert decode(pair.prompt).endswith(f"{d.utterances[0].text}<|im_end|>\n<|im_start|>assistant\n")
        assert decode(pair.rejected).startswith(d.utterances[1].text) and decode(pair.chosen).startswith("Bob: <A>")
    estimate = path.run()
    assert estimate.frozen_speakers == {"tiny-random": frozen.model_info} and len(frozen.model_info["sha256"]) == 64
    # and end to end, with the fast path refused (test_bad_influence_input_is_one_line)
    out = tmp_path / "frozen"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(out), *KNOBS,
                 "speaker_models=Bob=tiny-random", "influence.path=reference"]) == 0
    facts = json.loads((out / "run_spec.json").read_text())["selector_facts"]
    assert facts["influence_path"] == "reference" and facts["validation_dialogues"] == 4 * (1 + 3)
