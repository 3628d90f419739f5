"""Concurrent runs, as processes (issue: reliability): two selectors of one suite started at once
share the stages before selection without clobbering them, and a second process on one run is
refused in one line while the first works in it."""

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import SMOKE_ARGS

ROOT = Path(__file__).resolve().parents[1]


def harness(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_dir(root: Path, selector: str) -> Path:
    (found,) = [p for p in root.iterdir() if p.name.startswith(f"run:selector={selector},") and ",seed=0," in p.name
                and "budget=" not in p.name]
    return found


def test_two_selectors_started_at_once_share_the_shared_stages(smoke_suite, tmp_path):
    runs = {s: harness("run", *SMOKE_ARGS, "--selector", s, "--out", str(tmp_path)) for s in ("random", "qvalue")}
    said = {s: p.communicate(timeout=600) for s, p in runs.items()}
    assert all(p.returncode == 0 for p in runs.values()), {s: err[-2000:] for s, (_, err) in said.items()}
    # One of them computed each shared stage; the other waited for it at least once, then reused it.
    assert any("waiting for process" in out + err for out, err in said.values())
    (shared,) = (tmp_path / "shared").iterdir()
    (initial,) = (tmp_path / "initial").iterdir()
    stages = [r["stage"] for r in read_jsonl(shared / "ledger.jsonl") + read_jsonl(initial / "ledger.jsonl")]
    assert sorted(stages) == sorted(set(stages)) == sorted(
        ["eval", "it0/sft_data", "it0/sft", "it0/eval_sft", "it0/probe", "it0/mcts"])
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no half-written stage left behind
    # Each run's outputs are those of the same run made alone (the smoke suite's, seed 0).
    for selector in runs:
        here, alone = run_dir(tmp_path, selector), run_dir(smoke_suite, selector)
        assert json.loads((here / "status.json").read_text())["state"] == "complete"
        for f in ("it0/eval/per_instance.jsonl", "results.json"):
            if f == "results.json":
                scores = [json.loads((r / f).read_text())["scores"] for r in (here, alone)]
                assert scores[0] == scores[1]
            else:
                assert (here / f).read_text() == (alone / f).read_text()
        reference = Path(json.loads((alone / "run_spec.json").read_text())["shared_stages"])
        (first,) = (smoke_suite / "initial").glob("*/eval_initial")  # seeds 0 and 1 share it
        assert (initial / "eval_initial" / "per_instance.jsonl").read_text() == (
            first / "per_instance.jsonl").read_text()
        # The policy is named by its path, which differs between the two roots; its weights hash does not.
        assert [p | {"policy": p["policy"]["sha256"]} for p in read_jsonl(shared / "it0" / "mcts" / "pairs.jsonl")] == [
            p | {"policy": p["policy"]["sha256"]} for p in read_jsonl(reference / "it0" / "mcts" / "pairs.jsonl")]


def test_a_second_process_on_one_run_is_refused_while_the_first_works(tmp_path):
    args = ("run", *SMOKE_ARGS, "--selector", "random", "--out", str(tmp_path))
    first = harness(*args)
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("run:*/.lock")) and time.time() < deadline:  # the first holds its run
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "harness", *args, "--resume"], cwd=ROOT, text=True,
                                capture_output=True, timeout=300)
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"process {first.pid} is working in it" in errors[0], second.stderr[-2000:]
    finally:
        first.kill()
        first.wait(timeout=30)
