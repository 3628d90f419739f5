"""Cost ledgers, cost-per-gain and cost-to-target, from the stages' own records.

A run's cost is every stage it used, shared ones included: two runs of a suite share the stages
before selection, so the difference of their costs is the selection and what follows it. Training
cost leaves out the evaluations (they measure a policy; they do not make it). Each stage holds one
device, so its device-seconds are its wall seconds on that device (recorded beside it), plus the
seconds of an influence estimate it reused from the cache. Tokens are every model's: TOA's other
models (`offpolicy_*`) and a coach (`coach_*`) count beside the policy, with their own lines.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from harness.report.records import Run

CATEGORIES = {"sft_data": "SFT sampling", "probe": "probe", "mcts": "tree search", "select": "selection",
              "sft": "SFT", "dpo": "DPO", "eval": "eval", "eval_sft": "eval"}
EVALUATIONS = ("eval", "eval_sft")
# Ledger column -> the keys stages record it under.
COLUMNS = {"generated_tokens": ("completion_tokens", "offpolicy_completion_tokens", "coach_completion_tokens"),
           "prompt_tokens": ("prompt_tokens", "offpolicy_prompt_tokens", "coach_prompt_tokens"),
           "scored_tokens": ("scored_tokens",),  # options scored in choice mode
           "rollouts": ("rollouts",), "offpolicy_actions": ("offpolicy_actions",), "coach_calls": ("coach_calls",),
           "coach_tokens": ("coach_prompt_tokens", "coach_completion_tokens"), "influence_units": ("influence_units",),
           "validation_dialogues": ("validation_dialogues",), "influence_seconds": ("influence_seconds",),
           # each influence unit is one LoRA step from theta* (eta calibration's trial steps are not counted)
           "training_steps": ("steps", "warmup_steps", "influence_units"),
           "trained_tokens": ("trained_tokens",)}
# Columns whose work these stages do but older records did not record (DPO's trained tokens before
# they were counted): unknown there, not 0.
RECORDED_BY = {"trained_tokens": ("sft", "dpo")}
# A run's training cost (every stage but the evaluations), as `cost_<unit>` columns.
COSTS = {"tokens": "generated_tokens", "device_seconds": "device_seconds"}


def category(run: Run, name: str) -> str:
    if name == "select" and run.traits["influence"]:
        return "influence estimation"
    return CATEGORIES[name]


def reused_seconds(stage: dict) -> float:
    """Influence estimates are cached (gamma 0 and 1 share one); a run that reused one is charged
    the seconds it took where it was computed, so each selector's cost is what it costs alone."""
    return stage["cost"]["influence_seconds"] if stage["cost"].get("reused_estimate") else 0.0


def coach_work(run: Run, stage: dict) -> dict:
    """A selection's coach calls and tokens (`--selector mappa`), which its selection's facts record."""
    if stage["name"] != "select":
        return {}
    spent = run.selection_facts(int(stage["stage"].split("/")[0][2:])).get("coach_spent")
    return {f"coach_{k}": v for k, v in spent.items()} if spent else {}


def ledger(runs: list[Run]) -> pd.DataFrame:
    """One row per run and stage, then a total row per run."""
    rows = []
    for run in runs:
        mine = []
        for stage in run.stages:
            work = stage["cost"] | coach_work(run, stage)
            row = {"task": run.task, "policy": run.label, "seed": run.seed, "budget": run.budget or "",
                   "stage": stage["stage"], "category": category(run, stage["name"]),
                   "shared": stage["shared"], "device": stage["device"]}
            for column, keys in COLUMNS.items():
                found = [work[k] for k in keys if k in work]
                row[column] = math.nan if not found and stage["name"] in RECORDED_BY.get(column, ()) else sum(found)
            row |= {"wall_seconds": stage["wall_seconds"],
                    "device_seconds": stage["wall_seconds"] + reused_seconds(stage),
                    "training": stage["name"] not in EVALUATIONS}
            mine.append(row)
        total = {k: sum(r[k] for r in mine) for k in (*COLUMNS, "wall_seconds", "device_seconds")}
        training = {f"cost_{k}": sum(r[COSTS[k]] for r in mine if r["training"]) for k in COSTS}
        who = {k: mine[0][k] for k in ("task", "policy", "seed", "budget")}
        rows += mine + [who | {"stage": "total", "category": "total", "shared": False,
                               "device": ",".join(sorted({r["device"] for r in mine})), "training": None}
                        | total | training]
    return pd.DataFrame(rows)


def training_costs(book: pd.DataFrame) -> pd.DataFrame:
    """Per task, policy and budget: the mean over seeds of each run's training cost."""
    totals = book[book["stage"] == "total"]
    return (totals.groupby(["task", "policy", "budget"], sort=False)[[f"cost_{k}" for k in COSTS]]
            .mean().reset_index())


def cost_per_gain(table: pd.DataFrame, book: pd.DataFrame, baselines) -> pd.DataFrame:
    """Extra training cost over a named baseline per extra metric point (x100), in tokens and
    device-seconds, both on the seeds the two runs share: the gain is the comparison's paired
    difference, the extra cost the mean over those seeds of the cost differences (stages the two
    share, on whatever machine a seed ran, cancel). No row where they share no seed; no price where
    the selector gained nothing, or gained and cost less (a negative price would read as cheap).
    `gain_resolved` says whether the comparison's interval puts the gain above zero: a price per
    unresolved point divides by noise."""
    totals = book[(book["stage"] == "total") & (book["budget"] == "")]
    per_seed = {key: group.set_index("seed") for key, group in totals.groupby(["task", "policy"], sort=False)}
    rows = []
    for _, row in table.iterrows():
        mine = per_seed.get((row["task"], row["policy"]))
        if row["policy"] in ("initial", "sft") or mine is None:
            continue  # nothing trained: the fixed policies and the reference rows
        for base in baselines:
            theirs = per_seed.get((row["task"], base))
            paired = row.get(f"vs_{base}")
            if base == row["policy"] or theirs is None or paired is None or pd.isna(paired):
                continue
            seeds = sorted(set(mine.index) & set(theirs.index))
            if not seeds:
                continue
            points, low = 100 * paired, row.get(f"vs_{base}_low")
            out = {"task": row["task"], "policy": row["policy"], "baseline": base, "seeds": len(seeds),
                   "extra_points": points,
                   "gain_resolved": bool(points > 0 and low is not None and not pd.isna(low) and low > 0)}
            for k in COSTS:
                extra = statistics.fmean(mine.loc[s, f"cost_{k}"] - theirs.loc[s, f"cost_{k}"] for s in seeds)
                out[f"extra_{k}"] = extra
                out[f"{k}_per_point"] = extra / points if points > 0 and extra > 0 else None
            rows.append(out)
    return pd.DataFrame(rows)


def curve_points(runs: list[Run], book: pd.DataFrame) -> pd.DataFrame:
    """Metric against training cost: one point per task, policy and budget (means over seeds)."""
    costs = training_costs(book).set_index(["task", "policy", "budget"])
    groups: dict[tuple, list[float]] = {}
    for run in runs:
        groups.setdefault((run.task, run.label, run.budget or ""), []).append(run.score("dpo")["mean"])
    rows = [{"task": t, "policy": p, "budget": b, "mean": statistics.fmean(scores), "seeds": len(scores),
             **costs.loc[(t, p, b)].to_dict()} for (t, p, b), scores in groups.items()]
    return pd.DataFrame(rows)


def cost_to_target(points: pd.DataFrame, target: str | None) -> pd.DataFrame:
    """Per task and policy, the cheapest point (by device-seconds) that reaches the target policy's
    score, and its cost as a share of the target's own (the paper's "equal F1 at 54% of the
    GPU-hours" view). "Reached" compares point estimates (means over each point's seeds): whether a
    difference is resolved is the comparison's to say."""
    rows = []
    mine = points[(points["policy"] == target) & (points["budget"] == "")].set_index("task") if target else points[:0]
    for (task, policy), group in points.groupby(["task", "policy"], sort=False):
        if task not in mine.index:
            continue
        goal = mine.loc[task]
        reached = group[group["mean"] >= goal["mean"] - 1e-12].sort_values("cost_device_seconds")
        first = reached.iloc[0] if len(reached) else None
        row = {"task": task, "policy": policy, "target": target, "target_score": goal["mean"],
               "reached": first is not None, "budget": None if first is None else first["budget"],
               "seeds": None if first is None else first["seeds"]}
        for k in COSTS:
            cost = None if first is None else first[f"cost_{k}"]
            row[f"cost_{k}"] = cost
            row[f"{k}_share_of_target"] = None if cost is None or not goal[f"cost_{k}"] else cost / goal[f"cost_{k}"]
        rows.append(row)
    return pd.DataFrame(rows)
