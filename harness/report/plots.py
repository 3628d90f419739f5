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
            seeds = int(rows["seeds"].max())  # a mean over fewer seeds moves more: the legend says how many
            ax.plot(rows["cost_device_seconds"], rows["mean"], marker="o",
                    label=f"{policy} ({seeds} seed{'s' if seeds > 1 else ''})")
        ax.set(xlabel="training cost: device-seconds (shared stages included)", ylabel=metric[task],
               title=f"{task}: score against cost")
        ax.legend(fontsize="small")
        paths.append(_save(fig, out / f"{task}_metric_vs_cost.png"))
    return paths


def influence_panels(runs: list[Run], out: Path) -> list[Path]:
    """Per task and influence selector (DITS, its loss ablation): Q against influence (scatter, one
    colour per iteration) and the distribution of influence per iteration (box plots). Runs that
    differ only by gamma share one estimate, so each pair counts once per seed."""
    paths = []
    for task, selector in dict.fromkeys((r.task, r.selector) for r in runs if r.traits["influence"]):
        points: dict[int, dict[tuple, tuple[float, float]]] = {}
        for run in runs:
            if run.task == task and run.selector == selector and run.budget is None:
                for it in range(run.iterations):
                    for row in run.selection_scores(it):
                        points.setdefault(it, {})[(run.seed, row["pair_id"])] = (row["I"], row["Q"])
        if not points:
            continue
        name = f"{task}_{selector}"
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for it, rows in sorted(points.items()):
            ax.scatter([i for i, _ in rows.values()], [q for _, q in rows.values()], s=12, alpha=0.6,
                       label=f"iteration {it}")
        ax.set(xlabel="influence I (per unit)", ylabel="Q of the chosen response",
               title=f"{task}, {selector}: Q against influence")
        ax.legend(fontsize="small")
        paths.append(_save(fig, out / f"{name}_q_vs_influence.png"))
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.boxplot([[i for i, _ in rows.values()] for _, rows in sorted(points.items())],
                   tick_labels=[str(it) for it in sorted(points)])
        ax.set(xlabel="iteration", ylabel="influence I", title=f"{task}, {selector}: influence per iteration")
        paths.append(_save(fig, out / f"{name}_influence_by_iteration.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
