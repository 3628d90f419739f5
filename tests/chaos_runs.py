"""Chaos runs (issue 26, reliability): a smoke `harness run` killed with SIGKILL inside its stages at
seeded checkpoints, resumed after every kill, and its records compared with an uninterrupted run's
of the same seed on the same machine. Used by tests/test_chaos.py and by scripts/chaos.sh (a soak of
N kills: `python tests/chaos_runs.py --kills N`).

The kills land where the fault-injection seam says (`harness.records.chaos`): the process kills
itself at the n-th checkpoint of a named stage (a journaled batch, a trainer's checkpoint, or the
stage's files written before its manifest), as `kill -9` from outside would, but at a point the
seeded schedule chose. An uninterrupted run traced with the seam first says how many checkpoints
each stage has. Both runs live at the same path in turn (the reference is moved aside), so the
paths their records name are the same text.

What may differ, and nothing else (`volatile`): timings, timestamps, the pid in a lock file, and the
facts a resume records about itself (the step a training stage resumed from, the trees a search resumed
with, an influence estimate read back from its cache). Model weights are compared tensor for
tensor; manifests by their files, and by each file's size and sha256 where its bytes are equal.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The smoke preset with every stage holding some checkpoints: dialogues 4 a batch (the evaluations
# on 4 test questions), two influence units decoded apart, trl's checkpoint at every step (an
# execution setting), DPO over two steps.
ARGS = ["run", "--config", "smoke", "--task", "arc_c", "--selector", "dits", "batch_size=4", "test_questions=4",
        "select.unit_size=1", "select.decode_units=1", "dpo.epochs=2", "train.checkpoint_steps=1",
        "--resume"]  # --resume every time: one command line for every process
# Keys whose values may differ between a resumed run and an uninterrupted one: timings (every key
# ending in "seconds", and these), timestamps, and what a resume says of itself.
TIMINGS = {"train_runtime", "rollouts_per_second", "wall_seconds_this_process"}
TIMESTAMPS = {"time", "finished"}
RESUME_FACTS = {"resumed_from_step", "resumed_trees", "reused_estimate"}


def volatile(key: str) -> bool:
    return key.endswith("seconds") or key in TIMINGS | TIMESTAMPS | RESUME_FACTS


SKIP = {".lock"}  # a kernel lock's file: its last holder's pid
STAGES = {"eval_initial", "sft_data", "sft", "eval_sft", "probe", "mcts", "select", "dpo", "eval"}  # their folders


# A process that imports what every `harness run` imports (torch, transformers, trl: about 4 s of CPU
# a process on 2 cores) and runs no model, then forks one child a run: each run is its own process,
# killed as any other, without paying the imports again. It reads one job a line (the run's
# arguments, environment and log file) and answers each with the child's exit status (-9: killed).
FORKS = r"""
import json, os, sys
from harness.cli import main
import torch, transformers, trl  # what every run imports, imported once
from harness.experiment import executor
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the run: never back into this loop
        code = 1
        try:
            os.environ.update(job["env"])
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            sys.argv = [sys.argv[0], *job["args"]]
            code = main(job["args"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Runs:
    """`harness run` with the chaos arguments, each run a process forked from one that holds the imports."""

    def __init__(self, logs: Path):
        self.logs, self.count = logs, 0
        logs.mkdir(parents=True, exist_ok=True)
        self.server = subprocess.Popen([sys.executable, "-c", FORKS, "harness"], cwd=ROOT, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.server.stdout.readline().strip() == "ready"

    def __call__(self, out: Path, env: dict | None = None) -> tuple[int, str]:
        """(exit status, what the run printed) of a run into `out`; -9: it was killed."""
        self.count += 1
        log = self.logs / f"{self.count:02d}.log"
        job = {"args": [*ARGS, "--out", str(out)], "env": env or {}, "log": str(log)}
        self.server.stdin.write(json.dumps(job) + "\n")
        self.server.stdin.flush()
        return int(self.server.stdout.readline()), log.read_text()

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


def checkpoints(trace: Path) -> dict[str, int]:
    """Per stage, in the order they ran, the checkpoints an uninterrupted run reached."""
    counts: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        row = json.loads(line)
        counts[row["stage"]] = max(counts.get(row["stage"], 0), row["checkpoint"])
    return counts


def schedule(counts: dict[str, int], kills: int, seed: int) -> list[tuple[str, int]]:
    """`kills` seeded kills as (stage, checkpoint of the stage in an uninterrupted run), in run
    order: one in every stage first, the rest spread over the stages' other checkpoints. A stage's
    last checkpoint (its files written, its manifest not) makes it start over, so it is only ever a
    stage's last kill; the others continue from what the kill left."""
    rng = random.Random(seed)
    stages = list(counts)
    per_stage = {s: 1 for s in stages[:kills]}
    spare = [s for s in stages for _ in range(counts[s] - 1)]
    rng.shuffle(spare)
    for s in spare[:max(0, kills - len(stages))]:
        per_stage[s] += 1
    return [(s, point) for s in stages if s in per_stage
            for point in sorted(rng.sample(range(1, counts[s] + 1), per_stage[s]))]


def partial_work(run_root: Path) -> list[str]:
    """What a killed run left of its unfinished work: journals and their lines (an evaluation's or
    the SFT data's batches, the search's trees, influence units), trl's checkpoints, and stage
    folders without a manifest."""
    found = []
    for path in sorted(run_root.rglob("*")):
        rel = path.relative_to(run_root).as_posix()
        if path.is_file() and path.suffix == ".jsonl" and (".partial/" in rel or path.name.endswith(".units.jsonl")):
            found.append(f"{rel}: {len(path.read_text().splitlines())} lines")
        elif path.is_dir() and path.parent.name.endswith(".checkpoints"):
            found.append(rel)
        elif path.is_dir() and path.name in STAGES and not (path / "manifest.json").exists():
            found.append(f"{rel}/ (no manifest)")
    return found


def status_of(run_root: Path) -> dict:
    """The run's status.json as its last process wrote it."""
    (path,) = run_root.glob("run:*/status.json")
    return json.loads(path.read_text())


def chaos_run(out: Path, kills: int, seed: int, truncate: str | None = "initial/*/eval_initial/per_instance.jsonl",
              log=print) -> dict:
    """An uninterrupted run, then the same run killed `kills` times by the seeded schedule and resumed,
    `truncate` (a file of a finished shared stage, a glob under the suite's folder) cut short after the first kill that leaves it
    finished; the records compared. Returns the kills (each with the stage status.json names and the
    partial work left), the checkpoints per stage, the comparison and the lines saying what was redone."""
    out.mkdir(parents=True, exist_ok=True)
    here, reference, trace = out / "run", out / "reference", out / "trace.jsonl"
    started = time.time()
    harness = Runs(out / "logs")
    try:
        code, said = harness(here, {"HARNESS_CHAOS_TRACE": str(trace)})
        assert code == 0, said[-3000:]
        here.rename(reference)
        counts = checkpoints(trace)
        plan = schedule(counts, kills, seed)
        log(f"reference run: {time.time() - started:.0f} s; checkpoints per stage: {counts}")
        done, redone, cut = [], [], None
        for i, (stage, point) in enumerate(plan):
            earlier = [p for s, p in plan[:i] if s == stage]  # this stage's kills so far: it resumes after the last
            code, said = harness(here, {"HARNESS_CHAOS_KILL": f"{stage}:{point - (earlier[-1] if earlier else 0)}"})
            redone += [line for line in said.splitlines() if "] redo: " in line]
            assert code == -9, (stage, point, code, said[-3000:])
            state = status_of(here)
            done.append({"target": stage, "checkpoint": point, "status": state["stage"], "state": state["state"],
                         "partial": partial_work(here)})
            log(f"kill {i + 1}/{len(plan)}: {stage} at checkpoint {point} (status.json: {state['stage']}); "
                f"left: {', '.join(done[-1]['partial']) or 'nothing'}")
            if truncate and cut is None:
                found = sorted(here.glob(truncate))
                if found and found[0].parent.joinpath("manifest.json").exists():
                    cut = found[0]
                    cut.write_bytes(cut.read_bytes()[:-7])
        code, said = harness(here)
        assert code == 0, said[-3000:]
        redone += [line for line in said.splitlines() if "] redo: " in line]
    finally:
        harness.close()
    compared = compare(reference, here)
    log(f"chaos run: {time.time() - started:.0f} s in all")
    return {"kills": done, "checkpoints": counts, "compared": compared, "redone": redone,
            "truncated": str(cut.relative_to(here)) if cut else None, "seconds": time.time() - started}


def strip(value):
    """A record without its volatile fields."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if not volatile(k)}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def records(path: Path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return json.loads(path.read_text())


def compare(reference: Path, resumed: Path) -> dict:
    """Every file of both trees: the same names; bytes equal, or (JSON records) equal but for their
    volatile fields; weights equal tensor for tensor; manifests listing the same files, with the same
    size and sha256 for every file whose bytes are equal. Fails on the first difference; returns the
    counts, and the files that differed in volatile fields only (`volatile`)."""
    def listing(root):
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name not in SKIP)

    names = listing(reference)
    assert names == listing(resumed), sorted(set(names) ^ set(listing(resumed)))
    counts = {"files": len(names), "bytes": 0, "byte_equal": 0, "records_equal_but_volatile": 0,
              "weights_files": 0, "tensors": 0, "manifests": 0, "volatile": []}
    same_bytes = set()
    for name in names:
        a, b = (reference / name).read_bytes(), (resumed / name).read_bytes()
        counts["bytes"] += len(a)
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            x, y = load_file(reference / name), load_file(resumed / name)
            assert x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and x[k].equal(y[k]) for k in x), name
            counts["weights_files"] += 1
            counts["tensors"] += len(x)
        if a == b:
            same_bytes.add(name)
            counts["byte_equal"] += 1
            continue
        if name.endswith("manifest.json"):  # below, once every file it lists is compared
            continue
        assert name.endswith((".json", ".jsonl")), f"{name} differs"
        x, y = strip(records(reference / name)), strip(records(resumed / name))
        if name.endswith("ledger.jsonl"):  # a history: a redone stage has a line each time it finished
            x, y = ({row["stage"]: row for row in rows} for rows in (x, y))
        assert x == y, f"{name} differs in more than its volatile fields"
        counts["records_equal_but_volatile"] += 1
        counts["volatile"].append(name)
    for name in names:
        if name.endswith("manifest.json"):
            x, y = records(reference / name)["files"], records(resumed / name)["files"]
            folder = name.rpartition("/")[0]
            assert x.keys() == y.keys(), name
            assert all(x[f] == y[f] for f in x if f"{folder}/{f}" in same_bytes), name
            counts["manifests"] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description="A chaos soak: a smoke harness run killed N times and resumed")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    result = chaos_run(args.out, args.kills, args.seed)
    by_stage: dict[str, int] = {}
    for kill in result["kills"]:
        by_stage[kill["status"]] = by_stage.get(kill["status"], 0) + 1
    print("kills survived per stage (stage: kills / its checkpoints):")
    for stage, n in result["checkpoints"].items():
        print(f"  {stage}: {by_stage.get(stage, 0)} / {n}")
    c = result["compared"]
    print(f"kills: {len(result['kills'])}, every one survived; truncated {result['truncated']}, redone: "
          f"{'; '.join(result['redone']) or 'none'}")
    print(f"compared {c['files']} files, {c['bytes']:,} bytes: {c['byte_equal']} byte for byte, "
          f"{c['records_equal_but_volatile']} equal but for volatile fields, {c['tensors']} tensors in "
          f"{c['weights_files']} weights files tensor for tensor, {c['manifests']} manifests; "
          f"{result['seconds']:.0f} s")
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
