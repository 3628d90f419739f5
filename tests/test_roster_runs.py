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
