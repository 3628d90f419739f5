"""Fault injection for the chaos test and soak (tests/test_chaos.py, scripts/chaos.sh): the one seam.

A long stage's checkpoints call `checkpoint()`: a batch appended to a journal
(`harness.records.journal`), a trainer's checkpoint saved (`harness.experiment.chaos_trainer`), and
the executor once a stage's files are written, before its manifest. With the environment variable
`HARNESS_CHAOS_KILL=<stage>:<n>` (a stage label of `harness run`, such as `it0/mcts`) the process
kills itself with SIGKILL at the n-th checkpoint it reaches while the executor runs that stage, as
`kill -9` from outside would, but at a point the test chose. `HARNESS_CHAOS_TRACE=<file>` appends
one line per checkpoint reached (stage, index), which is how the test learns each stage's
checkpoints. Without either variable every call returns at once: nothing else reads them.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager

KILL, TRACE = "HARNESS_CHAOS_KILL", "HARNESS_CHAOS_TRACE"

_stage: str | None = None  # the stage the executor is running
_reached: dict[str, int] = {}  # checkpoints reached per stage in this process


def armed() -> bool:
    return bool(os.environ.get(KILL) or os.environ.get(TRACE))


@contextmanager
def stage(label: str):
    """The executor runs stage `label` within this block: its checkpoints count as that stage's."""
    global _stage
    _stage = label
    try:
        yield
    finally:
        _stage = None


def checkpoint() -> None:
    """A checkpoint is durable: traced, and where it is the one `HARNESS_CHAOS_KILL` names, the
    process dies here."""
    if _stage is None or not armed():
        return
    n = _reached[_stage] = _reached.get(_stage, 0) + 1
    trace = os.environ.get(TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": _stage, "checkpoint": n, "pid": os.getpid()}) + "\n")
    target, _, index = os.environ.get(KILL, "").rpartition(":")
    if target == _stage and index == str(n):
        os.kill(os.getpid(), signal.SIGKILL)
