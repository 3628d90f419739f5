"""`harness data ls`: per task and split, the rows a data directory holds and any schema problem,
or where the rows would come from instead."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.tasks import TASKS, get_task
from harness.tasks.base import SPLITS, check_data_dir


def inventory(data_dir: Path | None) -> list[dict]:
    """One record a task and split: `rows` (None when not here), `source`, `problem`."""
    if data_dir is not None:
        check_data_dir(data_dir)
    out = []
    for name in TASKS:
        task = get_task(name)
        for split in SPLITS:
            path = data_dir / name / f"{split}.jsonl" if data_dir else None
            record = {"task": name, "split": split, "rows": None, "source": "", "problem": ""}
            if path and path.is_file():
                record["source"] = str(path)
                try:
                    record["rows"] = len(task.load(split, data_dir))
                except HarnessError as e:
                    record["problem"] = str(e).removeprefix(f"{path}:")
            elif task.dataset and split in task.hub_splits:
                config = f" ({task.hub_config})" if task.hub_config else ""
                record["source"] = (f"hub {task.dataset}{config} {task.hub_splits[split]}: "
                                    "--online or harness data fetch")
            else:
                record["source"] = "not here (and not on the hub)"
            out.append(record)
    return out
