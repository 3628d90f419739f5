"""The comparison table: task x policy, with paired differences against the baselines.

Few seeds are affordable, so a difference between two selectors is measured on the same test items:
per seed, the selector's score on an item minus the baseline's on that item; each item's differences
averaged over the seeds (the items repeat in every seed, so they, not item x seed, are the
independent draws); a Student-t interval on the mean over items. The spread of a row is the standard deviation over seeds
when there are several, else the standard error over test items (the column says which).
"""

from __future__ import annotations

import math
import statistics

import pandas as pd
from scipy import stats as scistats

from harness.errors import HarnessError
from harness.report.records import Run

BASELINES = ("optima_full", "random")
CONFIDENCE = 0.95
FIXED_POLICIES = ("initial", "sft")  # shared by every run of a seed
# Rows in the paper's ablation order; other policies (DITS variants, new selectors) after, by name.
ORDER = (*FIXED_POLICIES, "optima_full", "random", "qvalue")


def _order(policy: str) -> tuple:
    return (ORDER.index(policy), "") if policy in ORDER else (len(ORDER), policy)


def paired_difference(diffs: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of per-item differences with its t interval; n is the number of items."""
    n = len(diffs)
    if n == 0:
        return {"diff": None, "low": None, "high": None, "n": 0}
    mean = statistics.fmean(diffs)
    if n == 1:
        return {"diff": mean, "low": None, "high": None, "n": 1}
    half = float(scistats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n))
    return {"diff": mean, "low": mean - half, "high": mean + half, "n": n}


def _policies(runs: list[Run]) -> dict[str, dict[int, tuple[Run, str]]]:
    """Policy name -> seed -> (the run holding it, which of its evaluations)."""
    out: dict[str, dict[int, tuple[Run, str]]] = {}
    for run in runs:
        for policy in FIXED_POLICIES:
            out.setdefault(policy, {}).setdefault(run.seed, (run, policy))
        seeds = out.setdefault(run.label, {})
        if run.seed in seeds:
            raise HarnessError(f"two runs of {run.label} with seed {run.seed} in one suite: {seeds[run.seed][0].path} "
                               f"and {run.path}")
        seeds[run.seed] = (run, "dpo")
    return out


def comparison(runs: list[Run], baselines=BASELINES) -> pd.DataFrame:
    """One row per task and policy (initial, SFT-only, then each selector), numeric columns only.
    Budget-sweep runs are left out: they are the cost curves' points."""
    rows = []
    for task in dict.fromkeys(r.task for r in runs):
        mine = [r for r in runs if r.task == task and r.budget is None]
        policies = _policies(mine)
        for name in sorted(policies, key=_order):
            seeds = policies[name]
            scored = [run.score(which) for run, which in seeds.values()]
            means = [s["mean"] for s in scored]
            several = len(means) > 1
            row = {"task": task, "policy": name, "metric": scored[0]["metric"], "mean": statistics.fmean(means),
                   "spread": statistics.stdev(means) if several else scored[0]["stderr"],
                   "spread_kind": "sd over seeds" if several else "stderr over items", "seeds": len(means),
                   "questions": scored[0]["n"],
                   "tokens_per_dialogue": statistics.fmean(s["tokens_per_dialogue"] for s in scored),
                   "pairs_trained": None if name in FIXED_POLICIES else statistics.fmean(
                       sum(t["dpo_pairs"] for t in run.results["training"].values()) for run, _ in seeds.values())}
            for base in baselines:
                if base not in policies or base == name:
                    row |= {f"vs_{base}": None, f"vs_{base}_low": None, f"vs_{base}_high": None, f"vs_{base}_n": 0}
                    continue
                by_item: dict[str, list[float]] = {}
                for seed, (run, which) in seeds.items():
                    if seed in policies[base]:
                        brun, bwhich = policies[base][seed]
                        a, b = run.item_scores(which), brun.item_scores(bwhich)
                        for i in a.keys() & b.keys():
                            by_item.setdefault(i, []).append(a[i] - b[i])
                d = paired_difference([statistics.fmean(v) for v in by_item.values()])
                row |= {f"vs_{base}": d["diff"], f"vs_{base}_low": d["low"], f"vs_{base}_high": d["high"],
                        f"vs_{base}_n": d["n"]}
            rows.append(row)
    return pd.DataFrame(rows)


def display(table: pd.DataFrame, baselines=BASELINES) -> pd.DataFrame:
    """The comparison as people read it: mean ± spread, differences with their interval."""
    out = pd.DataFrame({
        "task": table["task"], "policy": table["policy"], "metric": table["metric"],
        "score": [f"{m:.4f} ± {s:.4f}" for m, s in zip(table["mean"], table["spread"])],
        "spread": table["spread_kind"], "seeds": table["seeds"], "questions": table["questions"]})
    for base in baselines:
        out[f"Δ vs {base} [{CONFIDENCE:.0%} CI]"] = [
            _diff(d, lo, hi) for d, lo, hi in zip(table[f"vs_{base}"], table[f"vs_{base}_low"],
                                                 table[f"vs_{base}_high"])]
    out["tokens/dialogue"] = [f"{t:.1f}" for t in table["tokens_per_dialogue"]]
    out["pairs trained"] = ["-" if pd.isna(p) else f"{p:.0f}" for p in table["pairs_trained"]]
    return out


def _diff(d, lo, hi) -> str:
    if d is None or pd.isna(d):
        return "-"
    if lo is None or pd.isna(lo):
        return f"{d:+.4f}"
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def write_formats(table: pd.DataFrame, shown: pd.DataFrame, stem) -> dict[str, str]:
    """`stem`.md, .csv, .json and .tex: the numbers in CSV and JSON, the readable form in Markdown and LaTeX."""
    paths = {"md": f"{stem}.md", "csv": f"{stem}.csv", "json": f"{stem}.json", "tex": f"{stem}.tex"}
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(shown.to_markdown(index=False) + "\n")
    table.to_csv(paths["csv"], index=False)
    table.to_json(paths["json"], orient="records", indent=2)
    with open(paths["tex"], "w", encoding="utf-8") as f:
        f.write(shown.to_latex(index=False).replace("±", r"$\pm$").replace("Δ", r"$\Delta$"))
    return paths
