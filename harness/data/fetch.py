"""`harness data fetch`: a task's splits from the Hugging Face hub, written in the local layout the
loaders read (`<data_dir>/<task>/<split>.jsonl`), so a machine without network can run what a
machine with network fetched."""

from __future__ import annotations

from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.tasks import get_task

# `datasets.load_dataset` builders for files downloaded from the hub, by extension.
FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def file_source(files: dict[str, str]) -> dict:
    """`load_dataset` arguments that read the hub's splits (by their hub names) from local files."""
    builders = {FILE_BUILDERS.get(Path(p).suffix) for p in files.values()}
    if len(builders) != 1 or None in builders:
        raise HarnessError(f"--files must all be {' or '.join(FILE_BUILDERS)} files of one kind, "
                           f"got {', '.join(files.values())}")
    return {"path": builders.pop(), "data_files": files}


def fetch(task_name: str, data_dir: str | Path, splits: list[str] | None = None, limit: int | None = None,
          source: dict | None = None) -> dict[str, tuple[Path, int]]:
    """Write each split's rows (the first `limit`) to `<data_dir>/<task>/<split>.jsonl` and return
    `{split: (path, rows)}`. Every split is read and checked against the task's schema before the
    first file is written; each file is replaced atomically."""
    task = get_task(task_name)
    if task.dataset is None and source is None:
        raise HarnessError(f"{task_name} is not on the hub: put its files in {data_dir}/{task_name}/<split>.jsonl")
    splits = splits or list(task.hub_splits)
    rows = {split: task.read_hub(split, source, limit) for split in splits}
    for split, triples in rows.items():
        task.parse(triples, split)
    written = {}
    for split, triples in rows.items():
        path = Path(data_dir) / task_name / f"{split}.jsonl"
        with runs.atomic_file(path) as tmp:
            runs.write_jsonl(tmp, (row for _, _, row in triples))
        written[split] = (path, len(triples))
    return written
