"""`harness run` / `harness suite`: the SFT data rules and masks on hand-made data, then the smoke
preset end to end for every selector on shared stages, and a killed run resumed."""

import json
from pathlib import Path

import pytest
from conftest import SMOKE_ARGS as ARGS
from conftest import SMOKE_SELECTORS as SELECTORS

from harness.cli import main
from harness.errors import HarnessError
from harness.mas.dialogue import Dialogue, Utterance
from harness.experiment import executor
from harness.experiment.plan import (
    make_plan,
    parse_selector,
    split_selectors,
)
from harness.experiment.stages import Pipeline
from harness.tasks.base import Question
from harness.train.sft_data import agent_view, keep_best


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("rewards, fraction, epsilon, kept", [
    ([0.9, 0.2, 0.7, 0.5], 0.5, 0.0, [0, 2]),  # top half by reward
    ([0.9, 0.2, 0.7, 0.5], 0.75, 0.6, [0, 2]),  # top 3, then the epsilon cut
    ([0.5, 0.5, 0.5], 0.7, 0.5, [0, 1]),  # int(2.1) = 2; ties keep pool order; epsilon inclusive
    ([0.1, 0.3], 1.0, 0.5, []),
])
def test_keep_best(rewards, fraction, epsilon, kept):
    assert keep_best(rewards, fraction, epsilon) == kept


def _utterance(speaker, text):
    return Utterance(speaker, text, "", 5, 0, 0, False)


def test_agent_views_end_at_the_agents_last_utterance():
    d = Dialogue(Question("q1", "Who?", ("x",)), ("sys A", "sys B"))
    for speaker, text in [("Alice", "a1"), ("Bob", "b1"), ("Alice", "a2")]:
        d.utterances.append(_utterance(speaker, text))
    alice, bob = agent_view(d, 0), agent_view(d, 1)
    assert [m["role"] for m in alice] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in alice if m["role"] == "assistant"] == ["a1", "a2"]
    assert [(m["role"], m["content"]) for m in bob] == [("system", "sys B"), ("user", "a1"), ("assistant", "b1")]
    d.utterances = d.utterances[:1]
    assert agent_view(d, 1) is None  # Bob never spoke: no example


def test_sft_reward_normalises_tokens_by_the_longest_uncut_sample():
    from harness.train.sft_data import question_t_norm

    def dialogue(tokens, cut=False):
        d = Dialogue(Question("q", "?", ("x",)), ("a", "b"))
        d.utterances = [Utterance("Alice", "t", "", tokens, 0, 0, cut)]
        return d

    assert question_t_norm([dialogue(30), dialogue(50), dialogue(90, cut=True)]) == 50
    assert question_t_norm([dialogue(70, cut=True), dialogue(90, cut=True)]) == 90  # all cut: the longest


def test_sft_mask_covers_own_turns_and_their_end_of_turn(tiny_fitted):
    from harness.train.trainers import assistant_tokens

    tok = tiny_fitted.tokenizer
    messages = [{"role": "system", "content": "You are Alice."}, {"role": "user", "content": "Question: who?"},
                {"role": "assistant", "content": "Alice: Bob. <A>Bob</A>"}, {"role": "user", "content": "Bob: ok"},
                {"role": "assistant", "content": "Alice: done <A>Bob</A>"}]
    ids, mask = assistant_tokens(tok, messages)
    assert len(ids) == len(mask) and tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    eot = tok.apply_chat_template(messages[:3], tokenize=False)[len(tok.apply_chat_template(
        messages[:2], tokenize=False, add_generation_prompt=True)) + len(messages[2]["content"]):]
    assert trained == f"Alice: Bob. <A>Bob</A>{eot}Alice: done <A>Bob</A>{eot}"
    assert "Question" not in trained and "Bob: ok" not in trained


def test_selector_specs_and_section_overrides():
    assert split_selectors("random,dits:gamma=0,alpha=0.3,qvalue") == ["random", "dits:gamma=0,alpha=0.3", "qvalue"]
    assert parse_selector("dits:gamma=0,alpha=0.3") == ("dits", ["gamma=0", "alpha=0.3"])
    with pytest.raises(HarnessError, match="unknown section 'synt'"):
        make_plan("smoke", ["synt.explore_time=4"])
    plan = make_plan("smoke", ["synth.explore_time=5", "select.unit_size=3"], selector="dits:gamma=0,alpha=0.3",
                     task="mmlu")
    assert (plan.synth.explore_time, plan.select.influence.unit_size, plan.select.gamma) == (5, 3, 0.0)
    # the selector's alpha is the selection's fraction, not LoRA's (a section's own key shadows a nested one's)
    assert (plan.select.alpha, plan.run.lora.alpha, plan.select.lora.alpha) == (0.3, 4, 4)
    assert plan.synth.question_offset == plan.run.sft.questions and plan.eval.limit == plan.run.test_questions
    # The selection does not change the shared stages; the tree search does.
    assert make_plan("smoke", [], selector="random", task="mmlu").key != plan.key
    assert make_plan("smoke", ["synth.explore_time=5"], selector="random", task="mmlu").key == plan.key


def test_each_iteration_draws_fresh_pools(shared_data, capsys):
    from harness.experiment.pools import check_pools, pool_ranges

    plan = make_plan("smoke", ["iterations=3"], selector="random", task="arc_c", data_dir=str(shared_data))
    ranges = pool_ranges(plan.run, plan.synth)
    assert ranges[0]["mcts"][0] == plan.synth.question_offset  # iteration 0's pools are the shared stages'
    pools = check_pools(plan)
    train = [set(pools[f"it{it}/{name}"]) for it in range(3) for name in ("sft", "mcts", "probe")]
    assert all(train) and all(a.isdisjoint(b) for i, a in enumerate(train) for b in train[i + 1:])
    assert main(["run", "--config", "smoke", "--task", "arc_c", "--data-dir", str(shared_data), "--dry-run",
                 "iterations=2"]) == 0
    assert "it1/mcts 4" in capsys.readouterr().out  # --dry-run shows them


@pytest.mark.parametrize("overrides, message", [
    (["sft.questions=30"], "the disjoint pools need 42"),
    (["sft.lr=-1"], "sft.lr must be positive"),
    (["selector=best"], "unknown selector 'best'"),
    (["synth.explor_time=3"], "override: unknown config key 'synth.explor_time'; did you mean: explore_time"),
    (["sft_lr=0.1"], "unknown config key 'sft_lr'; renamed: sft.lr"),
])
def test_bad_run_configs_stop_before_any_work(overrides, message, tmp_path, capsys):
    assert main(["run", *ARGS, "--out", str(tmp_path), "--dry-run", *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_a_search_without_pairs_stops_the_run(tmp_path):
    plan = make_plan("smoke", [], selector="qvalue", task="mmlu", out=str(tmp_path))
    (tmp_path / "mcts").mkdir()
    (tmp_path / "mcts" / "pairs.jsonl").write_text("")
    stage = Pipeline(plan).select("tiny-fitted", tmp_path / "mcts")
    with pytest.raises(HarnessError, match="the tree search yielded no pairs"):
        stage(tmp_path / "select")
    assert not (tmp_path / "select").exists()


@pytest.fixture(scope="module")
def suite(smoke_suite):
    return smoke_suite


RUN_ID_PREFIX = {"dits": "run:selector=dits,gamma=1.0,", "dits:gamma=0": "run:selector=dits,gamma=0.0,"}


def _run_dir(root, spec, seed=0):
    """The run of `spec` and `seed` at the preset's budget."""
    prefix = RUN_ID_PREFIX.get(spec, f"run:selector={spec},")
    (found,) = [p for p in root.iterdir() if p.name.startswith(prefix) and f",seed={seed}," in p.name
                and "budget=" not in p.name]
    return found


def _shared_dir(root, seed=0):
    """The pre-selection stages the runs of `seed` share."""
    spec = json.loads((_run_dir(root, "random", seed) / "run_spec.json").read_text())
    return root / "shared" / Path(spec["shared_stages"]).name


def test_every_selector_runs_end_to_end_on_shared_stages(suite):
    # One set of pre-selection stages per seed, for all its runs and budgets.
    assert sorted(p.name for p in (suite / "shared").iterdir()) == sorted(
        _shared_dir(suite, seed).name for seed in (0, 1))
    shared = [_shared_dir(suite)]
    plan = make_plan("smoke", [], selector="random", task="arc_c")
    # The initial evaluation: greedy, on test questions ARC-C deals alike at every seed, so one for both
    (initial,) = (suite / "initial").iterdir()
    ledger = read_jsonl(shared[0] / "ledger.jsonl") + read_jsonl(initial / "ledger.jsonl")
    assert sorted(r["stage"] for r in ledger) == sorted(
        ["eval", "it0/sft_data", "it0/sft", "it0/eval_sft", "it0/probe", "it0/mcts"])
    costs = {r["stage"]: r["cost"] for r in ledger}
    assert costs["it0/sft"]["steps"] > 0 and costs["it0/sft_data"]["completion_tokens"] > 0
    assert costs["eval"]["dialogues"] == plan.run.test_questions
    assert costs["it0/mcts"]["rollouts"] == plan.synth.questions * plan.synth.explore_time * plan.synth.expand_time
    candidates = read_jsonl(shared[0] / "it0" / "mcts" / "pairs.jsonl")
    assert candidates
    table = json.loads((suite / "suite.json").read_text())
    assert [r["policy"] for r in table["rows"]] == [
        "initial", "sft", "optima_full", "random", "qvalue", "dits:gamma=0", "dits:gamma=1"]
    assert {r["seeds"] for r in table["rows"]} == {2}
    budget_runs = sorted(p.name for p in suite.iterdir() if "budget=select.validation_size=2" in p.name)
    assert len(budget_runs) == 4 and all(name.startswith("run:selector=dits") for name in budget_runs)
    for selector in SELECTORS:
        run = _run_dir(suite, selector)
        spec = json.loads((run / "run_spec.json").read_text())
        results = json.loads((run / "results.json").read_text())
        assert json.loads((run / "status.json").read_text())["state"] == "complete"
        pools = [set(v) for k, v in spec["pools"].items() if k != "source"]
        assert all(a.isdisjoint(b) for i, a in enumerate(pools) for b in pools[i + 1:])
        assert [r["policy"] for r in results["scores"]] == ["initial", "sft", "dpo"]
        selected = read_jsonl(run / "it0" / "select" / "selected.jsonl")
        expected = len(candidates) if selector == "optima_full" else max(1, int(len(candidates) * 0.5 + 0.5))
        assert results["training"]["it0"]["dpo_pairs"] <= len(selected)
        assert len(selected) == expected == results["pairs"]["it0"]["selected"]
        dpo = json.loads((run / "it0" / "dpo" / "stats.json").read_text())
        sft = json.loads((shared[0] / "it0" / "sft" / "stats.json").read_text())
        assert dpo["pairs"] + dpo["dropped_prompt_too_long"] == len(selected)
        assert dpo["trained_tokens"] >= 2 * dpo["pairs"]  # a chosen and a rejected response a pair
        assert dpo["policy_sha256"] != sft["policy_sha256"]  # DPO moved the weights
        assert dpo["base"] == str(shared[0] / "it0" / "sft" / "model")
        log = read_jsonl(run / "it0" / "dpo" / "train_log.jsonl")
        assert "rewards/margins" in log[0] and "loss" in log[0]
        assert not (run / "it0" / "dpo" / "trainer").exists()
    sft_log = read_jsonl(shared[0] / "it0" / "sft" / "train_log.jsonl")
    assert sft_log[0]["loss"] > 0 and json.loads((shared[0] / "it0" / "sft" / "stats.json").read_text())[
        "trained_tokens"] > 0


def test_a_killed_run_resumes_to_the_same_outputs(suite, tmp_path, monkeypatch, capsys):
    args = ["run", *ARGS, "--selector", "qvalue", "--out", str(tmp_path)]

    def killed(self, base, select_dir):
        def stage(out):
            raise KeyboardInterrupt
        return stage

    with monkeypatch.context() as m:
        m.setattr(Pipeline, "dpo", killed)
        assert main(args) == 130
    run = _run_dir(tmp_path, "qvalue")
    assert json.loads((run / "status.json").read_text()) | {"time": 0} == {"state": "failed", "stage": "it0/dpo",
                                                                          "time": 0}
    assert main(args) == 2 and "--resume continues it" in capsys.readouterr().err
    assert main([*args, "--resume", "dpo.lr=0.001"]) == 2
    assert "config changed since the run started (run.dpo.lr)" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    reference = _run_dir(suite, "qvalue")
    # The policy is named by its path, which differs between the two roots; its weights hash does not.
    def selected(r):
        return [p | {"policy": p["policy"]["sha256"]} for p in read_jsonl(r / "it0" / "select" / "selected.jsonl")]

    assert selected(run) == selected(reference)
    f = "it0/eval/per_instance.jsonl"
    assert (run / f).read_text() == (reference / f).read_text()
    stats = [json.loads((r / "it0" / "dpo" / "stats.json").read_text()) for r in (run, reference)]
    assert stats[0]["policy_sha256"] == stats[1]["policy_sha256"]


def test_dry_run_shows_finished_and_pending_stages(suite, capsys):
    assert main(["run", *ARGS, "--selector", "dits:gamma=0.5", "--out", str(suite), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run:selector=dits,gamma=0.5" in out
    states = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in out.splitlines()
              if line.startswith(("| it0", "| eval"))}
    assert states["it0/mcts"] == "done" and states["it0/select"] == "to do"


def test_each_training_stage_runs_alone(suite, tmp_path):
    shared = _shared_dir(suite)  # seed 0: the config's default, as `harness train` uses
    sft_out, dpo_out = tmp_path / "sft", tmp_path / "dpo"
    assert main(["train", "--stage", "sft", "--config", "smoke", "--data", str(shared / "it0" / "sft_data" / "sft_data.jsonl"),
                 "--out", str(sft_out)]) == 0
    # The same data, config and seed as the run's SFT stage: the same policy.
    assert json.loads((sft_out / "stats.json").read_text())["policy_sha256"] == json.loads(
        (shared / "it0" / "sft" / "stats.json").read_text())["policy_sha256"]
    selected = _run_dir(suite, "qvalue") / "it0" / "select" / "selected.jsonl"
    assert main(["train", "--stage", "dpo", "--config", "smoke", "--task", "arc_c", "--model", str(sft_out / "model"),
                 "--data", str(selected), "--out", str(dpo_out), "dpo.max_prompt_length=8"]) == 2  # every prompt is longer
    assert not dpo_out.exists()
    assert main(["train", "--stage", "dpo", "--config", "smoke", "--task", "arc_c", "--model", str(sft_out / "model"),
                 "--data", str(selected), "--out", str(dpo_out)]) == 0
    assert (dpo_out / "model" / "model.safetensors").is_file() and read_jsonl(dpo_out / "train_log.jsonl")


def test_keys_added_since_a_run_started_are_no_change_at_their_defaults():
    plan = make_plan("smoke", [], selector="dits", task="arc_c")
    configs = json.loads(json.dumps(plan.configs()))
    old = json.loads(json.dumps(configs))
    del old["select"]["influence"]["eta_auto"]
    assert executor._changed(old, plan.configs()) == []
    old["select"]["influence"]["eta"] = 1.0
    assert executor._changed(old, plan.configs()) == ["select.influence.eta"]
    new = make_plan("smoke", ["select.eta_auto=true"], selector="dits", task="arc_c").configs()
    assert executor._changed(configs, new) == ["select.influence.eta_auto"]
    # a record of the flat layout (a80c8ba and before) reads as today's
    flat = {"select": {k: v for k, v in configs["select"].items() if k not in ("influence", "lora")}
            | configs["select"]["influence"] | {f"lora_{k}": v for k, v in configs["select"]["lora"].items()}}
    flat["select"]["influence_path"] = flat["select"].pop("path")
    assert executor._changed(flat, {"select": configs["select"]}) == []


@pytest.mark.parametrize("task, shared", [("arc_c", True), ("cbt", True), ("hotpotqa", False)])
def test_seeds_share_the_initial_evaluation_where_the_test_contexts_do_not_depend_on_them(task, shared, tmp_path):
    """Greedy, the initial evaluation depends on the seed only through the test questions' contexts:
    HotpotQA deals its paragraphs with the seed, CBT's blocks and ARC-C's whole questions do not."""
    plans = [make_plan("smoke", [], selector="random", task=task, seed=seed, out=str(tmp_path)) for seed in (0, 1)]
    assert (plans[0].initial_dir == plans[1].initial_dir) is shared
    assert plans[0].shared_dir != plans[1].shared_dir
    assert plans[1].initial_eval.seed == (0 if shared else 1) and plans[1].eval.seed == 1
    initial = plans[1].stages[0]
    assert initial.label == "eval" and initial.path == plans[1].initial_dir / "eval_initial"
