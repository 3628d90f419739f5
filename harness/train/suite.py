"""`harness suite`: several selectors (and seeds) run on shared stages, and their comparison table.

Each (selector, seed) is one `harness run` in the same suite directory, so the stages before the
selection are computed once per seed and every selector starts from the same SFT policy and the
same candidate pairs. The table has the initial and SFT-only policies first, then one row per
selector: its mean over seeds and the spread (standard deviation over seeds; with one seed, the
standard error over test questions).
"""

from __future__ import annotations

import statistics

from tabulate import tabulate

from harness import runs
from harness.errors import HarnessError
from harness.selection import SELECTORS
from harness.train.loop import execute, make_plan, parse_selector


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
             # an influence budget changes only what DITS computes
             if key.startswith("synth.") or SELECTORS.get(parse_selector(spec)[0]).influence]
    results = []
    for spec, plan in plans + [(None, plan) for plan in swept]:
        progress(f"== {plan.run_id}")
        result = execute(plan, resume=True, progress=progress)
        if spec is not None:
            results.append((spec, result))
    root = plans[0][1].run_dir.parent
    table = comparison(results)
    runs.write_json(root / "suite.json", table)
    (root / "suite.md").write_text(suite_table(table) + "\n")
    return table


def _spread(rows: list[dict]) -> tuple[float, float, int]:
    means = [r["mean"] for r in rows]
    if len(means) > 1:
        return statistics.fmean(means), statistics.stdev(means), len(means)
    return means[0], rows[0]["stderr"], 1


def comparison(results: list[tuple[str, dict]]) -> dict:
    """One row per policy: initial, SFT-only, then each selector's final DPO policy."""
    by_policy: dict[str, list[dict]] = {}
    walls: dict[str, dict] = {}
    seen_seeds: dict[str, set] = {}
    for spec, res in results:
        final = max((r for r in res["scores"] if r["policy"] == "dpo"), key=lambda r: r["iteration"])
        for name, row in (("initial", _one(res, "initial")), ("sft", _one(res, "sft")), (spec, final)):
            if res["seed"] in seen_seeds.setdefault(name, set()):
                continue  # initial and SFT-only are shared by the runs of a seed
            seen_seeds[name].add(res["seed"])
            by_policy.setdefault(name, []).append(row | {"pairs": res["pairs"]})
        walls[spec] = res["wall_seconds"]
    rows = []
    for name, scored in by_policy.items():
        mean, spread, n = _spread(scored)
        rows.append({"policy": name, "metric": scored[0]["metric"], "mean": mean, "spread": spread, "seeds": n,
                     "questions": scored[0]["n"],
                     "tokens_per_dialogue": statistics.fmean(r["tokens_per_dialogue"] for r in scored),
                     "selected_pairs": None if name in ("initial", "sft") else
                     statistics.fmean(sum(p["selected"] for p in r["pairs"].values()) for r in scored)})
    return {"rows": rows, "wall_seconds": walls}


def _one(res: dict, policy: str) -> dict:
    return next(r for r in res["scores"] if r["policy"] == policy)


def suite_table(table: dict) -> str:
    rows = [[r["policy"], r["metric"], f"{r['mean']:.4f}", f"{r['spread']:.4f}", r["seeds"], r["questions"],
             f"{r['tokens_per_dialogue']:.1f}", "-" if r["selected_pairs"] is None else f"{r['selected_pairs']:.0f}"]
            for r in table["rows"]]
    out = tabulate(rows, ["policy", "metric", "value", "± spread", "seeds", "questions", "tokens/dialogue",
                          "pairs trained"], tablefmt="github")
    stages = sorted({s for w in table["wall_seconds"].values() for s in w}, key=_stage_order)
    walls = [[spec] + [f"{w[s]:.0f}" if s in w else "-" for s in stages] for spec, w in table["wall_seconds"].items()]
    return out + "\n\nwall seconds per stage (shared stages ran once, in the first run)\n" + tabulate(
        walls, ["selector", *stages], tablefmt="github")


def _stage_order(label: str) -> tuple:
    order = ["eval", "sft_data", "sft", "eval_sft", "probe", "mcts", "select", "dpo"]
    it, _, name = label.rpartition("/")
    return (int(it[2:]) if it else -1, order.index(name) if name in order else len(order))
