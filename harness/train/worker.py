"""One process of a training stage under `accelerate launch` (harness.train.launch):
`python -m harness.train.worker JOB_DIR`. Every process trains; the main one writes the stats."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import config, runs
from harness.config import RunConfig


def main(job_dir: Path) -> None:
    from accelerate import PartialState

    from harness.train.launch import TRAINERS

    job = json.loads((job_dir / "job.json").read_text())
    cfg = config.build(RunConfig, overrides=job["config"])
    rows = [row for _, row in runs.read_jsonl(job_dir / "rows.jsonl")]
    checkpoints = Path(job["checkpoints"]) if job["checkpoints"] else None
    stats = TRAINERS[job["kind"]](job["base"], rows, cfg, Path(job["out"]), job["name"], checkpoints)
    if PartialState().is_main_process:
        runs.write_json(job_dir / "stats.json", stats)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
