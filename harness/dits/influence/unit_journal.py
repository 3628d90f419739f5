"""An estimate's units a group at a time, each group journaled as it ends (`harness.records.journal`),
so a killed selection starts again from the groups it finished instead of from the first unit.

What precedes the units is computed again: the warm-up to theta*, its validation dialogues, eta's
calibration and, on the fast path, every unit's gradient (taken together in shared passes, so each
is bitwise what an uninterrupted estimate steps with). It is seeded, and a minute against the units'
hours. The groups are those a path runs together anyway: one unit on the reference path, the fast
path's `decode_units` (whose diverged dialogues decode in one batch), the server path's `max_loras`
(whose adapters are served together); so a group's results do not depend on the groups before it. A
group's line holds its units' (F or loss, changed answers, item scores) and what it added to the
path's counters (validation dialogues, the backend's usage, the fast path's account, the unit
seconds), which the estimate adds back. The screen path scores every unit in one pass: not journaled.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from harness.dits.influence.record import Estimate
from harness.records.cost import spent, summed
from harness.dits.influence.reference_path import ReferencePath, Start
from harness.records import journal

# Units a path runs together, by path name (`influence.path`), from the influence config.
GROUPS = {"reference": lambda inf: 1, "fast": lambda inf: inf.decode_units, "server": lambda inf: inf.max_loras}


def run(path: ReferencePath, kind: str, file: Path, key: str) -> Estimate:
    """`path.run(kind)`, its units' groups journaled at `file`; `key`: the estimate's cache key."""
    if path.name not in GROUPS:
        return path.run(kind)
    start = path.begin(kind)
    started = time.time()
    units = start.units
    if kind == "metric" and path.name == "fast":
        path.prepare_units(start.theta_star, units)
    size = GROUPS[path.name](path.cfg.influence)
    groups = [range(lo, min(lo + size, len(units))) for lo in range(0, len(units), size)]
    journaled = journal.Journal(file, [journal.key("units", key, kind, start.eta, [units[i] for i in g])
                                       for g in groups])
    resumed = journaled.finished  # groups a killed estimate finished: their counters are not this process's
    bar = tqdm(total=len(units), initial=sum(len(groups[g]) for g in resumed), desc=f"{kind} influence units",
               unit="unit", file=sys.stderr, dynamic_ncols=True)

    def group(g: int) -> dict:
        before = counters(path)
        scored = unit_scores(path, start, kind, [units[i] for i in groups[g]])
        bar.update(len(groups[g]))
        return {"scored": scored, "counters": {k: spent(before[k], v) for k, v in counters(path).items()}}

    done = journaled.run(group)
    bar.close()
    estimate = path.finish(start, [s for g in done for s in g["scored"]], time.time() - started)
    return with_counters(estimate, [done[g]["counters"] for g in resumed])


def unit_scores(path: ReferencePath, start: Start, kind: str, members: list[list[int]]) -> list:
    """A group's (F or loss, changed answers, item scores) per unit, as `path.run` scores them."""
    if kind == "loss":  # no dialogues after the step: no answers to compare
        return [(path.loss_step(start.theta_star, unit, start.eta, start.probe), None, None) for unit in members]
    return path.unit_scores(start.theta_star, members, start.eta, start.answers_before)


def counters(path: ReferencePath) -> dict[str, dict]:
    """The path's counters an estimate records."""
    return {"validation_dialogues": {"n": path.dialogues_run}, "usage": path.backend.usage.as_dict(),
            "drafts": dict(path.account), "unit_seconds": dict(path.unit_seconds)}


def with_counters(estimate: Estimate, earlier: list[dict]) -> Estimate:
    """The estimate with what the groups read from the journal added to its counters (this process
    counted only its own work)."""
    for c in earlier:
        dialogues = estimate.validation_dialogues + c["validation_dialogues"]["n"]
        estimate = replace(estimate, validation_dialogues=dialogues, usage=summed([estimate.usage, c["usage"]]),
                           drafts=summed([estimate.drafts, c["drafts"]]),
                           unit_seconds=summed([estimate.unit_seconds, c["unit_seconds"]]))
    return estimate
