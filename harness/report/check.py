"""`harness check`: a suite's scores against a recorded reference, for CI regression gates.

A reference holds, per task and policy, the score a suite gave and the tolerance it may drop by. A
score below reference - tolerance, or a reference row the suite no longer has, fails the check.
`--bless` writes a new reference from the suite on purpose (and says so in the file).

Greedy decoding on CPU is deterministic on one machine, not across CPU generations: kernels of
other vector widths sum in other orders, tiny-fitted's 800 training steps amplify that, and near-tied
answers flip (the smoke suite's initial policy scored 0.25 on one CI machine, 0.125 on an AVX-512
one). `--bless --keep-lowest` therefore merges: each score becomes the lowest any blessed machine
produced, and the reference lists the machines, so one reference holds on every CPU it has seen.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

from harness import runs as runsmod
from harness.errors import HarnessError

REQUIRED = ("task", "policy", "metric", "mean", "tolerance")


def bless(comparison: pd.DataFrame, suite: str, path: Path, tolerance: float, keep_lowest: bool = False) -> dict:
    """The suite's scores as the reference at `path`; `keep_lowest`: merged with the reference there
    (if any), each score the lower of the two, its rows this suite lacks kept."""
    if tolerance < 0:
        raise HarnessError(f"tolerance must be at least 0, got {tolerance}")
    machine = {"blessed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "suite": suite,
               "git_sha": runsmod.git_sha(), "cpu": platform.processor() or platform.machine(),
               "torch_cpu_capability": cpu_capability()}
    earlier, machines = {}, []
    if keep_lowest and path.is_file():
        earlier = {(r["task"], r["policy"], r["metric"]): r for r in read_reference(path)}
        old = json.loads(path.read_text())
        machines = old.get("machines", [{k: old[k] for k in ("blessed", "suite", "git_sha") if k in old}])
    scores = {(r.task, r.policy, r.metric): {
        "task": r.task, "policy": r.policy, "metric": r.metric,
        "mean": min(r.mean, earlier.get((r.task, r.policy, r.metric), {}).get("mean", r.mean)),
        "seeds": r.seeds, "questions": r.questions, "tolerance": tolerance} for r in comparison.itertuples()}
    # a row this suite lacks stays required: merging never loosens the gate
    scores = [*scores.values(), *(row for key, row in earlier.items() if key not in scores)]
    reference = {"suite": suite, "blessed": machine["blessed"], "machines": [*machines, machine], "scores": scores}
    runsmod.write_json(path, reference)
    return reference


# ATen's rule (DispatchStub's compute_cpu_capability) for the kernels torch's CPU operators run:
# AVX512 where the CPU has AVX-512 VL, BW and DQ and FMA, else AVX2 where it has AVX2 and FMA.
CAPABILITIES = (("AVX512", {"avx512vl", "avx512bw", "avx512dq", "fma"}), ("AVX2", {"avx2", "fma"}))


def cpu_capability() -> str | None:
    """The vector width of torch's CPU kernels on this machine, as `torch.backends.cpu.get_cpu_capability()`
    says it, from the CPU's flags (reports do not import torch); None off x86 Linux."""
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if forced:
        return forced.upper()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    flags = next((set(line.partition(":")[2].split()) for line in lines if line.startswith("flags")), None)
    if flags is None:
        return None
    return next((name for name, needs in CAPABILITIES if needs <= flags), "DEFAULT")


def read_reference(path: Path) -> list[dict]:
    if not path.is_file():
        raise HarnessError(f"{path}: no such reference (write one with harness check --bless)")
    try:
        scores = json.loads(path.read_text())["scores"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise HarnessError(f"{path}: not a reference file ({e})") from None
    for n, row in enumerate(scores):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise HarnessError(f"{path}: scores[{n}]: missing key {missing[0]!r}")
    return scores


def check(comparison: pd.DataFrame, reference: list[dict]) -> pd.DataFrame:
    """One row per reference score: now, the reference, the allowed floor, and pass or fail."""
    now = {(r.task, r.policy): r for r in comparison.itertuples()}
    rows = []
    for ref in reference:
        got = now.get((ref["task"], ref["policy"]))
        floor = ref["mean"] - ref["tolerance"]
        if got is None:
            status, mean = "missing", None
        elif got.metric != ref["metric"]:
            status, mean = f"metric {got.metric}, not {ref['metric']}", got.mean
        else:
            mean = got.mean
            status = "pass" if mean >= floor - 1e-12 else "FAIL"
        rows.append({"task": ref["task"], "policy": ref["policy"], "metric": ref["metric"], "now": mean,
                     "reference": ref["mean"], "tolerance": ref["tolerance"], "floor": floor, "status": status})
    return pd.DataFrame(rows)
