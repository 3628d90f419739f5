"""Work done a batch at a time and checkpointed: a journal of finished batches (append-only JSONL).

A long stage computes its work in batches whose inputs, seeds and composition do not depend on what
ran before them in the process: an evaluation's dialogues `batch_size` at a time, the SFT data's
samples, DITS's influence units. Each finished batch is one line, appended and synced to disk
(`runs.append_jsonl`), so a kill loses at most the batch under way. Started again, the stage keeps
the lines whose key is the key of a batch it would run and computes the others; a batch a kill cut
(no line, or a cut last line) is redone whole, with the seeds it would have had, so the results are
an uninterrupted run's byte for byte. A batch's key names everything its result depends on (the
caller's config and model, its place and its items), so a line of other work is never taken.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from harness import runs
from harness.records import chaos

FILE = "batches.jsonl"  # a stage's journal, in its partial directory until the stage's records are written


def key(*parts) -> str:
    """A batch's key: a digest of what its result depends on (JSON-able parts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class Journal:
    """The journal at `path` of the batches `keys` names, in order: those a complete line holds are
    finished; the file is rewritten (atomically) without a cut last line or other work's."""

    def __init__(self, path: Path, keys: list[str]):
        self.path, self.keys = Path(path), keys
        wanted = set(keys)
        self.done = {row["key"]: row["result"] for row in runs.read_complete_jsonl(self.path)
                     if isinstance(row, dict) and row.get("key") in wanted and "result" in row}
        runs.write_jsonl(self.path, [{"key": k, "result": self.done[k]} for k in keys if k in self.done])

    @property
    def finished(self) -> list[int]:
        """The batches read back, by index."""
        return [i for i, k in enumerate(self.keys) if k in self.done]

    def run(self, compute: Callable[[int], object]) -> list:
        """Each batch's result, in order: batch i is `compute(i)` (JSON-able) unless it is finished.
        A result is what its line reads back as, whether computed now or before, so both give the
        same records."""
        results = []
        for i, k in enumerate(self.keys):
            if k not in self.done:
                row = json.loads(json.dumps({"key": k, "result": compute(i)}, ensure_ascii=False, default=str))
                runs.append_jsonl(self.path, [row])
                chaos.checkpoint()
                self.done[k] = row["result"]
            results.append(self.done[k])
        return results
