"""Cost ledgers, cost-per-gain and cost-to-target, from the stages' own records.

A run's cost is every stage it used, shared ones included: two runs of a suite share the stages
before selection, so the difference of their costs is the selection and what follows it. Training
cost leaves out the evaluations (they measure a policy; they do not make it). Each stage holds one
device, so its device-seconds are its wall seconds on that device (recorded beside it), plus the
seconds of an influence estimate it reused from the cache. Tokens are every model's: TOA's other
models (`offpolicy_*`) and a coach (`coach_*`) count beside the policy, with their own lines.
"""

from __future__ import annotations

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
           "training_steps": ("steps", "warmup_steps"),
           "trained_tokens": ("trained_tokens",)}
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
                row[column] = sum(work.get(k, 0) for k in keys)
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
    device-seconds. No price where the selector gained nothing over it, or gained and cost less (a
    negative price would read as cheap). `gain_resolved` says whether the comparison's interval
    puts the gain above zero: a price per unresolved point divides by noise."""
    costs = training_costs(book)
    costs = costs[costs["budget"] == ""].set_index(["task", "policy"])
    rows = []
    for _, row in table.iterrows():
        if row["policy"] in ("initial", "sft") or (row["task"], row["policy"]) not in costs.index:
            continue  # nothing trained: the fixed policies and the reference rows
        for base in baselines:
            if base == row["policy"] or (row["task"], base) not in costs.index:
                continue
            # the paired difference (on the seeds both ran), where the table has it
            paired = row.get(f"vs_{base}")
            if paired is None or pd.isna(paired):
                paired = row["mean"] - table[(table["task"] == row["task"]) & (table["policy"] == base)].iloc[0]["mean"]
            points = 100 * paired
            low = row.get(f"vs_{base}_low")
            out = {"task": row["task"], "policy": row["policy"], "baseline": base, "extra_points": points,
                   "gain_resolved": bool(points > 0 and low is not None and not pd.isna(low) and low > 0)}
            for k in COSTS:
                extra = costs.loc[(row["task"], row["policy"]), f"cost_{k}"] - costs.loc[
                    (row["task"], base), f"cost_{k}"]
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
    GPU-hours" view)."""
    rows = []
    mine = points[(points["policy"] == target) & (points["budget"] == "")].set_index("task") if target else points[:0]
    for (task, policy), group in points.groupby(["task", "policy"], sort=False):
        if task not in mine.index:
            continue
        goal = mine.loc[task]
        reached = group[group["mean"] >= goal["mean"] - 1e-12].sort_values("cost_device_seconds")
        first = reached.iloc[0] if len(reached) else None
        row = {"task": task, "policy": policy, "target": target, "target_score": goal["mean"],
               "reached": first is not None, "budget": None if first is None else first["budget"]}
        for k in COSTS:
            cost = None if first is None else first[f"cost_{k}"]
            row[f"cost_{k}"] = cost
            row[f"{k}_share_of_target"] = None if cost is None or not goal[f"cost_{k}"] else cost / goal[f"cost_{k}"]
        rows.append(row)
    return pd.DataFrame(rows)
