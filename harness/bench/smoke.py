"""The smoke preset's experiment end to end (`harness run --preset smoke`: tiny-fitted, SFT to the final
evaluation) in a fresh process and folder, timed from the command's start to its exit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from harness.errors import HarnessError

COMMAND = ("run", "--preset", "smoke")


def smoke_run(work: Path) -> dict:
    """Wall seconds of the smoke experiment run in `work` (its record under work/runs)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *COMMAND], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise HarnessError(f"harness {' '.join(COMMAND)} exited {done.returncode}: {last}")
    (record,) = (work / "runs" / "default").glob("run:*")
    return {"seconds": seconds, "record": str(record), "command": "harness " + " ".join(COMMAND)}
