"""Which site pack feeds which split, and where a pack lives.

Written packs (`harness/web/sites/<name>/`, shipped) are the test sites: their own questions are
test questions, and the project-written WebWalkerQA fixture questions of those sites stay in the
split the fixtures put them in (`qa/train.jsonl`, `qa/validation.jsonl`). Generated packs
(`harness data build-web`, written to `<data_dir>/webwalker/packs/<name>/`) are wikis over HotpotQA
and 2WikiMultihopQA rows: those from train rows feed train, those from validation rows validation,
so no training or validation question is asked on a test site; those from test rows feed test,
after the written sites' questions.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import HarnessError
from harness.registry import nearest
from harness.tasks.base import SPLITS

SITES = Path(__file__).parent / "sites"
WRITTEN = ("harrowgatebirds", "greenfieldcc", "fedge-workshop", "starforge-tactics")
GENERATED_FROM = ("hotpotqa", "2wmh")  # the datasets whose rows generated packs are built from


def pack_name(dataset: str, split: str) -> str:
    """The generated pack of a dataset's split."""
    return f"wiki-{dataset}-{split}"


GENERATED = {pack_name(dataset, split): (dataset, split) for dataset in GENERATED_FROM for split in SPLITS}
# The packs whose questions a split asks when no pack is named.
DEFAULT_PACKS = {
    "train": tuple(pack_name(dataset, "train") for dataset in GENERATED_FROM),
    "validation": tuple(pack_name(dataset, "validation") for dataset in GENERATED_FROM),
    "test": (*WRITTEN, pack_name("hotpotqa", "test"), pack_name("2wmh", "test")),
}


def packs_dir(data_dir: str | Path) -> Path:
    """Where `harness data build-web` writes a data directory's generated packs."""
    return Path(data_dir) / "webwalker" / "packs"


def snapshots(data_dir: str | Path) -> list[Path]:
    """The snapshots of live sites in a data directory (`harness data snapshot-web`): they serve the real
    WebWalkerQA questions about their sites."""
    found = []
    for manifest in sorted(packs_dir(data_dir).glob("*/manifest.json")):
        try:
            if json.loads(manifest.read_text(encoding="utf-8")).get("source") == "snapshot":
                found.append(manifest.parent)
        except (OSError, ValueError):
            raise HarnessError(f"{manifest}: unreadable or not JSON") from None
    return found


def built(name: str, data_dir: str | Path) -> bool:
    """Whether the generated pack `name` is built in the data directory."""
    return (packs_dir(data_dir) / name / "manifest.json").is_file()


def pack_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of the pack `name`: a written one shipped with the harness, or a generated one in
    the data directory."""
    if name in WRITTEN:
        return SITES / name
    if name not in GENERATED:
        raise HarnessError(f"unknown site pack {name!r}; {nearest(name, [*WRITTEN, *GENERATED])}")
    if data_dir is None:
        raise HarnessError(f"site pack {name!r} is generated into a data directory: build it with "
                           "`harness data build-web --data-dir DIR` and pass --data-dir DIR")
    folder = packs_dir(data_dir) / name
    if not (folder / "manifest.json").is_file():
        raise HarnessError(f"{folder}: site pack {name!r} not built (run `harness data build-web` on this "
                           "data directory)")
    return folder
