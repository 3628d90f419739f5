"""Chaos (issue 26, reliability): the journal of finished batches on plain data, the fault-injection
seam, the seeded kill schedule, then a smoke `harness run` killed with SIGKILL inside every one of
its stages and resumed after each kill, a finished stage's file truncated on the way, and its
records compared with an uninterrupted run's (tests/chaos_runs.py; scripts/chaos.sh soaks it)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_runs import chaos_run, schedule, strip

from harness.records.journal import Journal, key

ROOT = Path(__file__).resolve().parents[1]


def test_a_journal_keeps_finished_batches_and_redoes_a_cut_one(tmp_path):
    path, keys = tmp_path / "batches.jsonl", [key("eval", i) for i in range(3)]
    computed = []

    def work(i):
        computed.append(i)
        return {"batch": i, "score": i / 3}

    first = Journal(path, keys).run(work)
    assert computed == [0, 1, 2] and first == [{"batch": i, "score": i / 3} for i in range(3)]
    assert Journal(path, keys).run(work) == first and computed == [0, 1, 2]  # all read back
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + json.dumps({"key": "other work's", "result": 1}) + "\n" + lines[2] + lines[1][:9])
    again = Journal(path, keys)
    assert again.finished == [0, 2]  # batch 1's line was cut by a kill: redone whole
    assert again.run(work) == first and computed == [0, 1, 2, 1]
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [keys[0], keys[2], keys[1]]
    assert Journal(path, [key("eval", "changed config", i) for i in range(3)]).finished == []


def test_an_evaluation_resumes_from_its_journaled_batches_and_reference_rows(tmp_path, monkeypatch):
    """CBT in choice mode (with the reference rows) cut after its dialogues, then resumed: nothing is
    decoded again, and the records are an uninterrupted evaluation's."""
    from harness import evaluation

    knobs = {"task": "cbt", "model": "tiny-fitted", "limit": 4, "batch_size": 2, "max_turns": 2, "max_new_tokens": 16}
    whole = evaluation.evaluate(out=str(tmp_path / "whole"), **knobs)
    assert whole.stats["references"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "reference_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(out=str(tmp_path / "cut"), **knobs)
    assert len((tmp_path / ".cut.partial" / "batches.jsonl").read_text().splitlines()) == 2
    monkeypatch.undo()
    monkeypatch.setattr(evaluation, "run_dialogues", killed)  # the dialogues come from the journal
    resumed = evaluation.evaluate(out=str(tmp_path / "cut"), resume=True, **knobs)
    for name in ("per_instance.jsonl", "stats.json", "references.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert strip(resumed.cost) == strip(whole.cost) and not (tmp_path / ".cut.partial").exists()


SEAM = """
from harness.records import chaos
with chaos.stage("it0/probe"):
    chaos.checkpoint()
with chaos.stage("it0/mcts"):
    for _ in range(3):
        chaos.checkpoint()
print("not killed")
"""


def test_the_seam_kills_at_the_named_checkpoint_and_traces_them(tmp_path):
    def run(**env):
        return subprocess.run([sys.executable, "-c", SEAM], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **env})

    trace = tmp_path / "trace.jsonl"
    killed = run(HARNESS_CHAOS_KILL="it0/mcts:2", HARNESS_CHAOS_TRACE=str(trace))
    assert killed.returncode == -signal.SIGKILL and "not killed" not in killed.stdout
    assert [(r["stage"], r["checkpoint"]) for r in map(json.loads, trace.read_text().splitlines())] == [
        ("it0/probe", 1), ("it0/mcts", 1), ("it0/mcts", 2)]
    assert run(HARNESS_CHAOS_KILL="it0/sft:1").stdout == "not killed\n"  # no such checkpoint here
    assert run().stdout == "not killed\n"


def test_the_schedule_is_seeded_and_kills_in_every_stage_first():
    counts = {"eval": 3, "it0/sft": 4, "it0/probe": 1, "it0/select": 3}
    nine = schedule(counts, 9, seed=0)
    assert nine == schedule(counts, 9, seed=0) != schedule(counts, 9, seed=1)
    assert [s for s, _ in nine] == sorted((s for s, _ in nine), key=list(counts).index)  # in run order
    assert {s for s, _ in nine} == set(counts) and len(nine) == 9
    for stage, n in counts.items():
        points = [p for s, p in nine if s == stage]
        assert points == sorted(set(points)) and all(1 <= p <= n for p in points)
    assert len(schedule(counts, 50, seed=0)) == sum(counts.values())  # at most every checkpoint once
    assert [s for s, _ in schedule(counts, 2, seed=0)] == ["eval", "it0/sft"]


def test_a_run_killed_in_every_stage_resumes_to_an_uninterrupted_runs_records(tmp_path):
    result = chaos_run(tmp_path, kills=9, seed=0, log=lambda line: None)
    stages = list(result["checkpoints"])
    assert stages == ["eval", "it0/sft_data", "it0/sft", "it0/eval_sft", "it0/probe", "it0/mcts", "it0/select",
                      "it0/dpo", "it0/eval"]
    # Each kill landed in the stage it was aimed at, as the run's status.json says, with work under way.
    for kill in result["kills"]:
        assert (kill["status"], kill["state"]) == (kill["target"], "running"), kill
        assert kill["partial"], kill
    assert sorted({k["status"] for k in result["kills"]}) == sorted(stages)  # coverage: every stage
    # The truncated file of a finished stage was caught by its manifest, and the stage redone.
    (line,) = [r for r in result["redone"] if "per_instance.jsonl has" in r]
    assert line.startswith("[eval] redo: per_instance.jsonl has") and "its manifest says" in line
    compared = result["compared"]
    assert compared["files"] > 50 and compared["byte_equal"] > 20 and compared["tensors"] > 0
    assert compared["manifests"] == len(stages)
