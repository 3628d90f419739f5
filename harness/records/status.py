"""A run's `status.json`: its state (running, failed, complete) and stage as the executor recorded
them. A recorded "running" is believed only while the run's lock is held: a process killed without
a chance to record anything (`kill -9`, a crash) reads as "interrupted"."""

from __future__ import annotations

import time
from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.records import lock

FILE = "status.json"


def write(run_dir: Path, state: str, stage: str | None) -> None:
    runs.write_json(Path(run_dir) / FILE, {"state": state, "stage": stage, "time": time.time()})


def read(run_dir: Path) -> dict:
    """The run's status with its liveness from the lock: state "not started" without a record,
    "interrupted" (with `recorded`: "running") where it says running but no process holds the run."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return {"state": "not started", "stage": None}
    status = runs.read_json(path)
    if not isinstance(status, dict) or "state" not in status:
        raise HarnessError(f"{path}: no 'state' key (the executor writes one)")
    # A harness that took no locks (commit a80c8ba and before) left no lock file: its word is all there is.
    locking = (Path(run_dir) / lock.FILE).exists()
    if status["state"] == "running" and locking and not lock.held(run_dir):
        return status | {"state": "interrupted", "recorded": "running"}
    return status
