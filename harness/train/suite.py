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
from harness.train.loop import execute, make_plan


def run_suite(file: str | None, overrides: list[str] | None, selectors: list[str], seeds: list[int | None],
              flags: dict, progress=print) -> dict:
    results = []
    for seed in seeds:
        for spec in selectors:
            plan = make_plan(file, overrides, selector=spec, **(flags | {"seed": seed}))
            progress(f"== {plan.run_id}")
            results.append((spec, execute(plan, resume=True, progress=progress)))
            root = plan.run_dir.parent
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
