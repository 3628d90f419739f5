"""WebWalkerQA.

dataset: callanwu/WebWalkerQA (Wu et al., 2025); a test-only benchmark
splits: validation <- silver[:1000]; test <- main
setting: web: the explorer and the critic navigate the question's site from `root_url`, served
    from a site pack on 127.0.0.1 (`harness.web`); the "given URL, click only" setting
metric: SQuAD token F1 against the answer (the paper's metric is a GPT-4 judge's accuracy: not comparable)
licence: Apache-2.0

Questions come from site packs (`harness.web.splits`): a split's default packs' `qa/<split>.jsonl`,
each question served by its own pack. Real WebWalkerQA rows (`<data_dir>/webwalker/<split>.jsonl`)
are asked only where a pack serves their root URL; the rest are skipped, counted and said once (their
live sites cannot be reached from here). Without a data directory, the written sites' questions of
the split are read; a default pack not built in the data directory (`harness data build-web`) is
left out, said once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from harness.errors import HarnessError
from harness.tasks import base
from harness.tasks.base import QA_RECIPE, Question, Task, check_data_dir, read_jsonl, require, row_hash
from harness.web import splits
from harness.web.pack import Root

log = logging.getLogger(__name__)


def warn_once(message: str) -> None:
    if message not in base._WARNED_SAMPLES:  # the loaders' one set of warnings given (tests reset it)
        base._WARNED_SAMPLES.add(message)
        log.warning(message)


class WebWalker(Task):
    name = "webwalker"
    dataset = "callanwu/WebWalkerQA"
    hub_splits = {"validation": "silver[:1000]", "test": "main"}
    setting = "web"
    metric = "f1"
    recipe = QA_RECIPE  # no reference recipe: QA's
    breakdown = ("difficulty_level", "hop", "lang", "domain")  # labels of its rows' `info`
    licence = "Apache-2.0"
    sizes = "- / silver 14k / 680"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "question", "answer", "root_url")
        pack = row.pop("pack_dir", None)  # where the question's site is served from: no part of its id
        return Question(
            id=row.get("id") or row_hash(row), question=row["question"], golds=(row["answer"],),
            meta={"root_url": row["root_url"], **(row.get("info") or {}), **({"pack_dir": pack} if pack else {})},
        )

    def load(self, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None,
             online: bool = False) -> list[Question]:
        data_dir = data_dir or os.environ.get("HARNESS_DATA_DIR") or None
        if data_dir:
            check_data_dir(Path(data_dir))
        names = splits.DEFAULT_PACKS.get(split, ()) if data_dir else splits.WRITTEN
        built = [n for n in names if n in splits.WRITTEN or splits.built(n, data_dir)]
        if not data_dir:
            warn_once(f"no data directory set: reading the written sites' {split} questions, a project-written sample "
                      "(set --data-dir and run `harness data build-web` there for the generated wikis)")
        elif len(built) < len(names):
            warn_once(f"{splits.packs_dir(data_dir)}: site packs {', '.join(n for n in names if n not in built)} not "
                      f"built: their {split} questions are left out (run `harness data build-web --data-dir {data_dir}`)")
        folders = [splits.pack_dir(name, data_dir) for name in built]
        rows = self.pack_rows(folders, split)
        real = Path(data_dir) / self.name / f"{split}.jsonl" if data_dir else None
        if real is not None and real.is_file():
            rows += self.served_rows(real, [*folders, *splits.snapshots(data_dir)])
        if not rows:
            raise HarnessError(f"webwalker/{split}: no questions in the site packs {', '.join(built) or '(none built)'}"
                               f"{f' or {real}' if real else ''}; build them with `harness data build-web`")
        self.source = str(rows[0][0])
        return self.parse(rows[:limit], split)

    @staticmethod
    def pack_rows(folders: list[Path], split: str) -> list[tuple]:
        """The split's rows of the site packs in `folders`, each with the pack that serves it."""
        return [(path, i, {**row, "pack_dir": str(folder)})
                for folder in folders if (path := folder / "qa" / f"{split}.jsonl").is_file()
                for i, row in read_jsonl(path)]

    @staticmethod
    def served_rows(real: Path, folders: list[Path]) -> list[tuple]:
        """The real rows whose site a pack or snapshot serves (the snapshot's stale questions left out);
        the others are counted and said once."""
        served, stale = {}, set()
        for folder in folders:
            served[Root.of(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["root_url"]).url] = folder
            if (folder / "qa" / "stale.jsonl").is_file():
                stale |= {row["question"] for _, row in read_jsonl(folder / "qa" / "stale.jsonl")}
        found = [(real, i, row) for i, row in read_jsonl(real)]
        kept, unserved = [], 0
        for path, i, row in found:
            root = _root(row)
            if root not in served:
                unserved += 1
            elif row.get("question") not in stale:
                kept.append((path, i, {**row, "pack_dir": str(served[root])}))
        if unserved:
            warn_once(f"{real}: {unserved} of {len(found)} questions skipped: no site pack or snapshot serves their "
                      "root URL (their live sites cannot be reached from here)")
        if len(found) - unserved - len(kept):
            warn_once(f"{real}: {len(found) - unserved - len(kept)} questions skipped: stale in their site's snapshot")
        return kept


def _root(row) -> str | None:
    """A row's canonical root URL, None where it has none a site could have."""
    try:
        return Root.of(row["root_url"]).url if isinstance(row, dict) and isinstance(row.get("root_url"), str) else None
    except HarnessError:
        return None
