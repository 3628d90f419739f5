"""The report's pictures (PNG): metric against cost, Q against influence, influence per iteration.

Drawn on matplotlib `Figure` objects, not pyplot: files only, no screen, no global figure state."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.report.records import Run


def metric_against_cost(points: pd.DataFrame, metric: dict[str, str], out: Path) -> list[Path]:
    """Per task: each selector's score against its training device-seconds, budget points joined."""
    paths = []
    for task, group in points.groupby("task", sort=False):
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for policy, rows in group.groupby("policy", sort=False):
            rows = rows.sort_values("cost_device_seconds")
            ax.plot(rows["cost_device_seconds"], rows["mean"], marker="o", label=policy)
        ax.set(xlabel="training cost: device-seconds (shared stages included)", ylabel=metric[task],
               title=f"{task}: score against cost")
        ax.legend(fontsize="small")
        paths.append(_save(fig, out / f"{task}_metric_vs_cost.png"))
    return paths


def influence_panels(runs: list[Run], out: Path) -> list[Path]:
    """Per task, for the DITS runs: Q against influence (scatter, one colour per iteration) and the
    distribution of influence per iteration (box plots)."""
    paths = []
    for task in dict.fromkeys(r.task for r in runs):
        scored = [(run, it, run.selection_scores(it)) for run in runs if run.task == task and run.selector == "dits"
                  for it in range(run.iterations)]
        if not scored:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        by_iteration: dict[int, list[float]] = {}
        for it in sorted({it for _, it, _ in scored}):
            rows = [r for _, i, rows in scored if i == it for r in rows]
            by_iteration[it] = [r["I"] for r in rows]
            ax.scatter([r["I"] for r in rows], [r["Q"] for r in rows], s=12, alpha=0.6, label=f"iteration {it}")
        ax.set(xlabel="influence I (per unit)", ylabel="Q of the chosen response", title=f"{task}: Q against influence")
        ax.legend(fontsize="small")
        paths.append(_save(fig, out / f"{task}_q_vs_influence.png"))
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.boxplot(list(by_iteration.values()), tick_labels=[str(i) for i in by_iteration])
        ax.set(xlabel="iteration", ylabel="influence I", title=f"{task}: influence per iteration")
        paths.append(_save(fig, out / f"{task}_influence_by_iteration.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
