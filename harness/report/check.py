"""`harness check`: a suite's scores against a recorded reference, for CI regression gates.

A reference holds, per task and policy, the score a suite gave and the tolerance it may drop by. A
score below reference - tolerance, or a reference row the suite no longer has, fails the check.
`--bless` writes a new reference from the suite on purpose (and says so in the file).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from harness import runs as runsmod
from harness.errors import HarnessError

REQUIRED = ("task", "policy", "metric", "mean", "tolerance")


def bless(comparison: pd.DataFrame, suite: str, path: Path, tolerance: float) -> dict:
    if tolerance < 0:
        raise HarnessError(f"tolerance must be at least 0, got {tolerance}")
    reference = {"suite": suite, "blessed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "git_sha": runsmod.git_sha(),
                 "scores": [{"task": r.task, "policy": r.policy, "metric": r.metric, "mean": r.mean, "seeds": r.seeds,
                             "questions": r.questions, "tolerance": tolerance} for r in comparison.itertuples()]}
    with runsmod.atomic_file(path) as tmp:
        runsmod.write_json(tmp, reference)
    return reference


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
