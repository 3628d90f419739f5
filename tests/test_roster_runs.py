"""A three-agent roster and a two-model roster (a frozen speaker) through `harness synth` and
`harness eval` on the tiny models: speakers follow the roster, pairs name their speaker and are
never a frozen speaker's, and the records name the roster and the frozen model."""

import json

import pytest

from harness.cli import main

SYNTH = ["synth", "--config", "smoke", "--task", "cbt", "--questions", "2"]
EVAL = ["eval", "--config", "smoke", "--task", "cbt", "--limit", "2"]
THREE = "roster=information_exchange_3"
FROZEN_BOB = "speaker_models=Bob=tiny-random"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def synth(tmp_path, *overrides):
    out = tmp_path / "synth"
    assert main([*SYNTH, "--out", str(out), "probe_size=2", *overrides]) == 0
    return out, read_jsonl(out / "trees.jsonl"), read_jsonl(out / "pairs.jsonl"), json.loads(
        (out / "run_spec.json").read_text())


def test_three_agents_search_trees_and_pairs_follow_the_roster(tmp_path):
    _, trees, pairs, spec = synth(tmp_path, THREE)
    names = ("Alice", "Bob", "Carol")
    assert spec["config"]["roster"] == "information_exchange_3"
    spoken = [n["utterance"]["speaker"] for t in trees for n in t["nodes"][1:]]
    assert spoken == [names[(n["depth"] - 1) % 3] for t in trees for n in t["nodes"][1:]] and "Carol" in spoken
    assert pairs, "the smoke search must yield pairs"
    for p in pairs:
        assert p["speaker"] == names[p["depth"] % 3]
        system = p["prompt"][0]["content"]
        assert system.startswith(f"You are {p['speaker']}, ") and "partners" in system
        roles = [m["role"] for m in p["prompt"][1:]]
        assert roles[-1] == "user" and all(a != b for a, b in zip(roles, roles[1:]))


def test_a_frozen_speaker_speaks_but_is_never_trained(tmp_path):
    out, trees, pairs, spec = synth(tmp_path, FROZEN_BOB)
    assert spec["config"]["speaker_models"] == "Bob=tiny-random"
    assert len(spec["frozen_speakers"]["tiny-random"]["sha256"]) == 64
    assert any(n["utterance"]["speaker"] == "Bob" for t in trees for n in t["nodes"][1:])
    assert all(p["speaker"] == "Alice" for p in pairs)


def test_three_agents_evaluate(tmp_path):
    assert main([*EVAL, "--out", str(tmp_path / "eval"), "references=false", THREE]) == 0
    for row in read_jsonl(tmp_path / "eval" / "per_instance.jsonl"):
        spoken = [u["speaker"] for u in row["transcript"]]
        assert spoken == [("Alice", "Bob", "Carol")[i % 3] for i in range(row["turns"])]


def test_two_models_evaluate(tmp_path):
    assert main([*EVAL, "--out", str(tmp_path / "eval"), "references=false", FROZEN_BOB]) == 0
    spec = json.loads((tmp_path / "eval" / "run_spec.json").read_text())
    assert spec["config"]["speaker_models"] == "Bob=tiny-random" and "tiny-random" in spec["frozen_speakers"]


def test_three_agents_run_every_stage_with_dits_on_both_paths(tmp_path):
    """`harness run` with Alice, Bob and Carol: SFT data, SFT, search, DITS selection on the fast and
    the reference path (the same F per unit), DPO and evaluation. HotpotQA: generate mode, where the
    fast path applies (choice mode takes the reference path)."""
    facts, runs = {}, {}
    for path in ("fast", "reference"):
        assert main(["run", "--config", "smoke", "--task", "hotpotqa", "--selector", "dits",
                     "--out", str(tmp_path / path), THREE, f"select.influence.path={path}"]) == 0
        (run,) = (tmp_path / path).glob("run:*")
        facts[path] = json.loads((run / "it0" / "select" / "run_spec.json").read_text())["selector_facts"]
        runs[path] = run
    assert facts["fast"]["influence_path"] == "fast" and facts["reference"]["influence_path"] == "reference"
    assert facts["fast"]["units"] == facts["reference"]["units"] and len(facts["fast"]["units"]) > 1
    assert facts["fast"]["f_after"] == facts["reference"]["f_after"]
    (shared,) = (tmp_path / "fast" / "shared").iterdir()
    trained = {e["agent"] for e in read_jsonl(shared / "it0" / "sft_data" / "sft_data.jsonl")}
    assert trained <= {"Alice", "Bob", "Carol"} and len(trained) > 1
    pairs = read_jsonl(shared / "it0" / "mcts" / "pairs.jsonl")
    assert pairs and {p["speaker"] for p in pairs} <= {"Alice", "Bob", "Carol"}
    for d in runs.values():
        results = json.loads((d / "results.json").read_text())
        assert [r["policy"] for r in results["scores"]] == ["initial", "sft", "dpo"]
        transcript = read_jsonl(d / "it0" / "eval" / "per_instance.jsonl")[0]["transcript"]
        assert [u["speaker"] for u in transcript] == [("Alice", "Bob", "Carol")[i % 3] for i in range(len(transcript))]
