"""The coach's figures and the search's models, per run and iteration, from the stages' own files.

`credit` (one row per coach use): where the tree search valued its nodes by a coach's credit
(`synth.credit=mappa`, the search's `credit.json`) and where the selection ranked by it
(`--selector mappa`, or `credit=mappa` beside another selector: the selection's facts): the actions
scored, the coach's mean chosen-minus-rejected gap over the pairs kept and over the pool, the parse
rate, the credit each agent earned, the bias by agent and by action type, the Spearman of the scores
against the task's reward and against final correctness, and the coach's calls and tokens. A coach whose scores do not
follow final correctness (`harness.credit.stats.NO_SIGNAL`) is marked "no signal"; a stronger coach
through the `openai` backend is the way to one (README).

`search_models` (TOA runs): per acting model, its actions by kind, the utterances it wrote, the
pairs' sides it wrote and its engine's tokens.

`method_note` is what a comparison row says of how its policy was made, where that is not Optima's
search and a selector alone: "TOA search (...)", "search valued by coach credit",
"MAPPA-style coach credit (DPO)", and "coach: no signal".
"""

from __future__ import annotations

import json

import pandas as pd

from harness.credit.stats import NO_SIGNAL
from harness.report.records import Run

CREDIT_COLUMNS = ["task", "policy", "seed", "iteration", "where", "coach", "sees_gold", "actions", "parse_rate",
                  "spearman_reward", "spearman_correct", "signal", "credit_by_agent", "bias_by_action", "gap_kept",
                  "gap_pool",
                  "coach_calls", "coach_prompt_tokens", "coach_completion_tokens"]
MODEL_COLUMNS = ["task", "policy", "seed", "iteration", "model", "generate", "refine", "utterances", "chosen",
                 "rejected", "prompt_tokens", "completion_tokens"]


def _read(path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _means(groups: dict, key: str) -> str:
    return ", ".join(f"{name} {g[key]:+.2f}" if key == "bias" else f"{name} {g[key]:.2f}"
                     for name, g in groups.items()) or "-"


def signal(rho: float | None) -> str:
    return "no signal" if rho is None or abs(rho) < NO_SIGNAL else "-"


def credit_rows(run: Run) -> list[dict]:
    rows = []
    for it in range(run.iterations):
        who = {"task": run.task, "policy": run.label, "seed": run.seed, "iteration": it}
        record = _read(run.stage_dir(f"it{it}/mcts") / "credit.json")
        if record is not None:
            s, coach = record["summary"], record["coach"]
            rows.append(who | {
                "where": "search", "coach": coach["model"]["name"], "sees_gold": coach["sees_gold"],
                "actions": s["actions"], "parse_rate": s["parse_rate"], "spearman_reward": s["spearman_reward"],
                "spearman_correct": s["spearman_correct"], "signal": signal(s["spearman_correct"]),
                "credit_by_agent": _means(s["by_agent"], "mean_score"), "bias_by_action": _means(s["by_action"], "bias"),
                "coach_calls": record["spent"]["calls"], "coach_prompt_tokens": record["spent"]["prompt_tokens"],
                "coach_completion_tokens": record["spent"]["completion_tokens"]})
        facts = run.selection_facts(it)
        if "coach_spent" in facts:
            spent = facts["coach_spent"]
            rows.append(who | {
                "where": "selection", "coach": facts["coach"]["model"]["name"], "sees_gold": facts["coach"]["sees_gold"],
                "actions": spent["actions"], "parse_rate": facts["parse_rate"], "spearman_reward": facts["spearman_q"],
                "spearman_correct": None, "signal": signal(facts["spearman_q"]), "credit_by_agent": "-",
                "bias_by_action": "-", "gap_kept": facts.get("kept_gap"), "gap_pool": facts.get("mean_gap"),
                "coach_calls": spent["calls"], "coach_prompt_tokens": spent["prompt_tokens"],
                "coach_completion_tokens": spent["completion_tokens"]})
    return rows


def credit_table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([row for run in runs for row in credit_rows(run)], columns=CREDIT_COLUMNS)


def model_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        for it in range(run.iterations):
            stage = run.stage_dir(f"it{it}/mcts")
            summary = _read(stage / "summary.json") or {}
            spent = ((_read(stage / "cost.json") or {}).get("search") or {}).get("by_model", {})
            for model, counts in summary.get("models", {}).items():
                rows.append({"task": run.task, "policy": run.label, "seed": run.seed, "iteration": it, "model": model,
                             **counts, "prompt_tokens": spent.get(model, {}).get("prompt_tokens"),
                             "completion_tokens": spent.get(model, {}).get("completion_tokens")})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def method_notes(runs: list[Run], comparison: pd.DataFrame, credit: pd.DataFrame) -> list[str | None]:
    """The comparison's `method` column: each trained policy's note (none for the fixed and reference rows)."""
    out = []
    for task, policy in zip(comparison["task"], comparison["policy"]):
        mine = [r for r in runs if r.task == task and r.label == policy and r.budget is None]
        out.append(method_note(mine, credit) if mine else None)
    return out


def method_note(runs: list[Run], credit: pd.DataFrame) -> str | None:
    """How a policy's runs made it, where not by Optima's search and a selector alone."""
    run = runs[0]
    synth = run.config["synth"]
    notes = []
    if synth.get("method", "optima") != "optima":
        notes.append(f"{synth['method'].upper()} search (models: {synth['models']})")
    if synth.get("credit"):
        notes.append("search valued by coach credit")
    if run.selector == "mappa":
        notes.append("MAPPA-style coach credit (DPO)")
    mine = credit[(credit["task"] == run.task) & (credit["policy"] == run.label)]
    made_by_coach = bool(synth.get("credit")) or run.selector == "mappa"  # not a coach that only looked on
    if made_by_coach and len(mine) and (mine["signal"] == "no signal").all():
        notes.append("coach: no signal")
    return "; ".join(notes) or None
