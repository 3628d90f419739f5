"""Readers for run records written by commit a80c8ba and before, which do not describe themselves:
no selector traits in a selection's record, no `stage_cost.json` in a stage. Pure JSON reading: the
same numbers from the files those records have."""

from __future__ import annotations

from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.records import cost

# The built-in selectors' traits as the older records' selections had them (they did not record
# them); newer selections record their own (`Selector.traits`), and a test holds this table to them.
SELECTOR_TRAITS = {
    "random": {"influence": False, "keeps_all": False, "kind": None},
    "qvalue": {"influence": False, "keeps_all": False, "kind": None},
    "optima_full": {"influence": False, "keeps_all": True, "kind": None},
    "dits": {"influence": True, "keeps_all": False, "kind": "metric"},
    "loss_influence": {"influence": True, "keeps_all": False, "kind": "loss"},
}


def selector_traits(selector: str, where: Path) -> dict:
    if selector not in SELECTOR_TRAITS:
        raise HarnessError(f"{where}: the selection records no selector traits, and {selector!r} is not a "
                           f"built-in selector whose traits are known ({', '.join(SELECTOR_TRAITS)})")
    return SELECTOR_TRAITS[selector]


def ledger_rows(ledgers: list[Path]) -> dict[str, dict]:
    """Stage label -> the ledger line written when it finished (the last one, if it ran twice)."""
    rows = {}
    for ledger in ledgers:
        rows |= {row["stage"]: row for _, row in runs.read_jsonl(ledger)} if ledger.exists() else {}
    return rows


def stage_cost(label: str, name: str, path: Path, ledger: dict[str, dict], run: Path) -> dict:
    """A stage's cost record as `harness.records.cost` writes it now: its wall seconds and device
    from the ledger line written when it finished, its work from its own files."""
    row = ledger.get(label)
    if row is None:
        raise HarnessError(f"{run}: stage {label} has no ledger line; the run is unfinished")
    return {"stage": label, "name": name, "device": row.get("device", "cpu"), "wall_seconds": row["wall_seconds"],
            "work": cost.work(name, path)}
