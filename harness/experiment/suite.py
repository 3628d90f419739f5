"""`harness suite`: several selectors (and seeds) run on shared stages, and their comparison table.

Each (selector, seed) is one `harness run` in the same suite directory, so the stages before the
selection are computed once per seed and every selector starts from the same SFT policy and the
same candidate pairs. The table is the reports' comparison (`harness.report.tables`) of the runs at
the preset's budget.
"""

from __future__ import annotations

import json

import pandas as pd
from tabulate import tabulate

from harness import runs
from harness.errors import HarnessError
from harness.experiment.executor import execute
from harness.experiment.plan import make_plan, parse_selector
from harness.report import records, tables
from harness.selection import SELECTORS


def budget_points(axes: list[str]) -> list[tuple[str, str]]:
    """`["synth.questions=4,8", "select.validation_size=4"]` -> [("synth.questions", "4"), ...]: each
    axis is swept alone, every other knob at the preset's value."""
    points = []
    for axis in axes:
        key, eq, values = axis.partition("=")
        section = key.partition(".")[0]
        if not eq or section not in ("synth", "select") or not values.strip(","):
            raise HarnessError(f"--budgets {axis!r}: expected synth.KEY=V1,V2 or select.KEY=V1,V2 "
                               "(a synthesis or an influence budget)")
        points += [(key, v) for v in values.split(",") if v]
    return points


def run_suite(file: str | None, overrides: list[str] | None, selectors: list[str], seeds: list[int | None],
              flags: dict, budgets: list[str] | None = None, progress=print) -> dict:
    """Every selector and seed, then every budget point; the table compares the runs at the preset's
    budget (the budget runs are the report's cost curves)."""
    points = budget_points(budgets or [])
    plans = [(spec, make_plan(file, overrides, selector=spec, **(flags | {"seed": seed})))
             for seed in seeds for spec in selectors]
    swept = [make_plan(file, [*(overrides or []), f"{key}={value}"], selector=spec,
                       **(flags | {"seed": seed, "budget": f"{key}={value}"}))
             for seed in seeds for key, value in points for spec in selectors
             # an influence budget changes only what the influence selectors compute
             if key.startswith("synth.") or SELECTORS.get(parse_selector(spec)[0]).influence]
    walls = {}
    for spec, plan in plans + [(None, plan) for plan in swept]:
        progress(f"== {plan.run_id}")
        result = execute(plan, resume=True, progress=progress)
        if spec is not None:
            walls[f"{spec} (seed {result['seed']})"] = result["wall_seconds"]
    root = plans[0][1].run_dir.parent
    table = tables.comparison([records.load_run(plan.run_dir) for _, plan in plans])
    summary = {"rows": json.loads(table.to_json(orient="records")), "wall_seconds": walls}
    with runs.atomic_file(root / "suite.json") as tmp:
        runs.write_json(tmp, summary)
    with runs.atomic_file(root / "suite.md") as tmp:
        tmp.write_text(suite_table(summary) + "\n")
    return summary


def suite_table(summary: dict) -> str:
    """The comparison as `harness report` shows it, then the wall seconds of each run's stages."""
    shown = tables.display(pd.DataFrame(summary["rows"])).to_markdown(index=False)
    walls = summary["wall_seconds"]
    stages = sorted({s for w in walls.values() for s in w}, key=_stage_order)
    rows = [[run] + [f"{w[s]:.0f}" if s in w else "-" for s in stages] for run, w in walls.items()]
    return shown + "\n\nwall seconds per stage (shared stages ran once, in the first run of a seed)\n" + tabulate(
        rows, ["run", *stages], tablefmt="github")


def _stage_order(label: str) -> tuple:
    order = ["eval", "sft_data", "sft", "eval_sft", "probe", "mcts", "select", "dpo"]
    it, _, name = label.rpartition("/")
    return (int(it[2:]) if it else -1, order.index(name) if name in order else len(order))
