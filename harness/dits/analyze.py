"""`harness analyze influence`: how well each estimate predicts the real gain of training on a unit.

For K units of the pool, from theta* (the warmed-up adapter): the metric influence (DITS: one step,
then F on the validation questions), the loss influence (one step, then the validation DPO loss),
and the unit's mean Q; against the true gain: `steps` optimizer steps on the unit, then F on
held-out evaluation questions (disjoint from the validation ones and the pairs'), minus F at theta*.
Spearman's rank correlation of each estimate with the true gain, and a scatter plot per estimate
(the paper's Figure 2a question: does the estimate rank units the way training on them pays?).

The first-order screen (`harness.screen`) is audited against the exact metric influence on the same
units and theta*: their Spearman and top-alpha overlap, beside the exact influence's own split-half
reliability (how well it agrees with itself, which bounds how well anything can agree with it).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from harness import runs
from harness.config import SelectConfig
from harness.dits.influence import ReferencePath, answer_mode, make_units, prepare
from harness.dits.scoring import influence, spearman, split_half, top_overlap
from harness.errors import HarnessError
from harness.screen.first_order import InfluenceScreen

ESTIMATES = ("metric_influence", "loss_influence", "q", "screen")


def analyze(pairs: list[dict], cfg: SelectConfig, units: int, steps: int, eval_split: str,
            eval_size: int) -> dict:
    if units < 2 or steps < 1:
        raise HarnessError(f"--units must be at least 2 (a correlation needs two points) and --steps at least 1; "
                           f"got {units} and {steps}")
    # the path it runs, whatever the preset's
    cfg = dataclasses.replace(cfg, influence=dataclasses.replace(cfg.influence, path="reference"))
    task, policy, validation = prepare(pairs, cfg)
    evaluation = task.load(eval_split, cfg.data_dir, eval_size, cfg.online)
    taken = {q.id for q in validation} | {p["question_id"] for p in pairs}
    if not evaluation or taken & {q.id for q in evaluation}:
        raise HarnessError(f"{task.name}/{eval_split}: the evaluation questions must exist and be disjoint from the "
                           f"validation questions ({cfg.influence.val_split}) and the pairs' questions; choose another "
                           "--eval-split")
    path = ReferencePath(pairs, cfg, task, policy, validation)
    theta_star = path.warm_up()
    at_theta_star = path.dialogues()
    f_before, answers_before, items_before = path.score(at_theta_star)
    all_units = make_units(len(pairs), cfg.influence.unit_size, cfg.seed)
    started = time.perf_counter()
    screen = InfluenceScreen(path.model, path.tokenizer, at_theta_star, answer_mode(pairs),
                             cfg.influence.step_optimizer, path.beta, cfg.influence.micro_batch)
    screened = screen.score_units(pairs, all_units[:units])
    screen_seconds = time.perf_counter() - started
    probe = path.loss_probe(theta_star, at_theta_star)
    g_before = path.validate(evaluation)[0]
    eta = (path.calibrate(theta_star, all_units, answers_before, items_before)[0] if cfg.influence.eta_auto
           else cfg.influence.eta)
    rows, items_after, exact_seconds = [], [], 0.0
    for unit, screen_value in tqdm(zip(all_units[:units], screened), total=len(screened),
                                   desc="influence against gain", unit="unit", file=sys.stderr, dynamic_ncols=True):
        started = time.perf_counter()
        f, _, items = path.unit_step(theta_star, unit, eta, answers_before)
        exact_seconds += time.perf_counter() - started
        items_after.append(items)
        loss = path.loss_step(theta_star, unit, eta, probe)
        path.restore(theta_star)
        optimizer = path.unit_optimizer(eta)
        for _ in range(steps):
            path.step(optimizer, unit)
        g = path.validate(evaluation)[0]
        (metric,), (lowered,) = influence([f], f_before, eta), influence([probe[2]], loss, eta)
        rows.append({"unit": unit, "pair_ids": [pairs[i]["pair_id"] for i in unit],
                     "metric_influence": metric, "loss_influence": lowered,
                     "q": sum(pairs[i]["q_chosen"] for i in unit) / len(unit), "screen": screen_value,
                     "true_gain": g - g_before})
    path.restore(theta_star)
    exact, first_order = [r["metric_influence"] for r in rows], [r["screen"] for r in rows]
    audit = {"spearman_with_metric_influence": spearman(first_order, exact), "alpha": cfg.alpha,
             "top_alpha_overlap": top_overlap(first_order, exact, cfg.alpha),
             "metric_influence_split_half": split_half(items_before, items_after),
             "surrogate_before": screen.s_before, "surrogate_rows": len(screen.rows),
             "screen_seconds": screen_seconds, "metric_influence_seconds": exact_seconds}
    return {"task": task.name, "policy": policy, "units": len(rows), "steps": steps, "eta": eta,
            "validation_ids": [q.id for q in validation], "evaluation_ids": [q.id for q in evaluation],
            "f_before": f_before, "loss_before": probe[2], "evaluation_before": g_before,
            "spearman": {name: spearman([r[name] for r in rows], [r["true_gain"] for r in rows]) for name in ESTIMATES},
            "screen_audit": audit,
            "rows": rows}


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, len(ESTIMATES))
    gains = [r["true_gain"] for r in result["rows"]]
    for ax, name in zip(axes, ESTIMATES):
        rho = result["spearman"][name]
        ax.scatter([r[name] for r in result["rows"]], gains, s=18)
        ax.set(xlabel=name.replace("_", " "), ylabel=f"true gain ({result['steps']} steps)",
               title=f"Spearman {'-' if rho is None else f'{rho:+.2f}'}")
    fig.suptitle(f"{result['task']}: estimates against the gain of training on a unit ({result['units']} units)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(result: dict, out: Path) -> None:
    with runs.run_directory(out) as tmp:
        runs.write_json(tmp / "analysis.json", {k: v for k, v in result.items() if k != "rows"})
        runs.write_jsonl(tmp / "units.jsonl", result["rows"])
        plot(result, tmp / "influence_vs_gain.png")
