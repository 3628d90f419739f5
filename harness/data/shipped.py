"""CBT items for a machine with no data directory: built once from the public-domain books shipped
with the harness (`harness/data/books/`, see its SOURCE.md) into the harness cache, then read as a
data directory. Without the `cbt` extra (spaCy and its model) the task reads its project-written
sample instead, and the warning says why."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import HarnessError

log = logging.getLogger(__name__)

BOOKS = Path(__file__).parent / "books"
SEED = 0
TYPE = "CN"  # the cbt task is CBT-CN
# The builder's sources: an edit to any of them builds the items again.
BUILDER = ("books.py", "build_cbt.py", "cbt_items.py", "tagging.py")
SAMPLE_ENV = "HARNESS_CBT_SAMPLE"  # set (to anything but "" or "0"): read the sample, build nothing (tests)

_results: dict[Path, tuple[Path | None, str]] = {}  # per cache folder: what this process found


def cache_key() -> str:
    """Of the shipped books (and their splits.json), the build's seed and type and the builder's
    sources: a change to any of them is a new folder."""
    h = hashlib.sha256(f"seed={SEED} type={TYPE}\n".encode())
    for path in sorted(BOOKS.iterdir()):
        if path.suffix in (".txt", ".json"):
            h.update(f"{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    here = Path(__file__).parent
    for name in BUILDER:
        h.update(f"{name} {hashlib.sha256((here / name).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()[:12]


def shipped_cbt_dir() -> tuple[Path | None, str]:
    """(the data directory holding `cbt/{train,validation,test}.jsonl` built from the shipped books,
    "") or (None, why the sample is read instead). Builds on first use, about a minute."""
    if os.environ.get(SAMPLE_ENV, "") not in ("", "0"):
        return None, f"{SAMPLE_ENV} is set"
    from harness.cache import cache_root

    final = cache_root() / "data" / f"cbt-books-{cache_key()}"
    if final in _results:
        return _results[final]
    if (final / "cbt" / "manifest.json").is_file():
        result = final, ""
    else:
        try:
            result = build(final), ""
        except (HarnessError, OSError) as e:  # no spaCy or model; a cache that cannot be written
            result = None, f"could not build CBT items from the books shipped with the harness: {e}"
    _results[final] = result
    return result


def build(final: Path) -> Path:
    """Build into a temporary folder beside `final`, then rename it: `final` is whole or absent.
    When another process got there first, its folder is kept."""
    from harness.data.build_cbt import BuildCBTConfig, build_cbt
    from harness.data.tagging import INSTALL

    model = BuildCBTConfig.spacy_model
    for module, what in (("spacy", "spaCy"), (model, f"spaCy model {model!r}")):
        if importlib.util.find_spec(module) is None:  # said before the line that promises a build
            raise HarnessError(f"{what} is not installed: {INSTALL}")
    n = len(list(BOOKS.glob("*.txt")))
    log.warning("cbt: building items from the %d public-domain books shipped with the harness (about a "
                "minute, once; cached in %s)", n, final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        build_cbt(BuildCBTConfig(books=str(BOOKS), out=str(tmp), type=TYPE, seed=SEED))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "cbt" / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
