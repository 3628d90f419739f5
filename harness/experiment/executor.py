"""Runs a plan's unfinished stages; writes the run's spec, status, ledger and results records.

The run directory is locked while its process works in it, and a suite's shared stages while one
of them is computed (`harness.records.lock`): a second process on the same run is refused, one
that needs a shared stage another is computing waits for it. A stage is finished when its manifest
is written after its files (`harness.records.manifest`); on resume every finished stage is checked
against it and a stage whose files were cut or changed is redone, saying so. Records written by
commit a80c8ba and before (no `schema_version`, no manifests) are read by reports, never resumed.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from harness import config as cfgmod
from harness import machine, runs
from harness.errors import HarnessError
from harness.experiment.plan import Plan
from harness.experiment.pools import check_pools
from harness.experiment.work import headline
from harness.records import chaos, cost, lock, manifest, spec, status

if TYPE_CHECKING:
    from pathlib import Path

    from harness.experiment.stages import Stage


def execute(plan: Plan, resume: bool = False, progress=print) -> dict:
    """Run every unfinished stage of `plan`; returns the results record (also results.json)."""
    pools = check_pools(plan)
    if chaos.armed():  # a chaos test: trainers' checkpoints are the seam's too
        from harness.experiment.chaos_trainer import arm

        arm()
    with lock.hold(plan.run_dir):
        _start(plan, pools, resume)
        for stage in plan.stages:
            with lock.hold(_home(plan, stage), wait=True, progress=progress) if stage.shared else nullcontext():
                _run_stage(plan, stage, progress)
        results = collect(plan)
        runs.write_json(plan.run_dir / "results.json", results)
        status.write(plan.run_dir, "complete", None)
    return results


def _start(plan: Plan, pools: dict, resume: bool) -> None:
    """The run's spec: written for a new run; for a resumed one, checked to be this harness's and
    this config's."""
    spec_path = plan.run_dir / spec.FILE
    configs = plan.configs()
    if not spec_path.exists():
        runs.write_json(spec_path, spec.run_spec(
            "run", plan.run_id, configs, plan.run.seed, device=machine.device_info(plan.run.device),
            shared_stages=str(plan.shared_dir), shared_key=plan.key, pools=pools,
            stages=[{"stage": s.label, "path": str(s.path), "shared": s.shared} for s in plan.stages]))
        return
    if not resume:
        raise HarnessError(f"{plan.run_dir} exists; --resume continues it (or remove it)")
    recorded = spec.read_resumable(spec_path)
    changed = _changed(recorded["config"], configs)
    if changed:
        raise HarnessError(f"{plan.run_dir}: the config changed since the run started ({', '.join(changed)}); "
                           "resume with the same config, or start a new run")


def _run_stage(plan: Plan, stage: Stage, progress) -> None:
    """Run `stage` unless it is finished; then its cost record, its manifest and its ledger line."""
    if stage.path.exists():
        issue = manifest.problem(stage.path)
        if issue is None:
            progress(f"[{stage.label}] done: {stage.path}")
            return
        if _older(plan, stage):
            raise HarnessError(f"{stage.path}: finished by an older harness (no {manifest.FILE}): reports read it, "
                               "but it is not resumed; start the run in another suite directory (--out)")
        progress(f"[{stage.label}] redo: {issue} ({stage.path})")
        shutil.rmtree(stage.path)
    status.write(plan.run_dir, "running", stage.label)
    progress(f"[{stage.label}] {stage.does}")
    started = time.time()
    try:
        with chaos.stage(stage.label):
            stage.run(stage.path)
            chaos.checkpoint()  # its files are written, its manifest is not: a kill here redoes it
    except BaseException:
        status.write(plan.run_dir, "failed", stage.label)
        raise
    wall = time.time() - started
    record = cost.record(stage.label, stage.name, stage.path, plan.run.device, wall)
    runs.write_json(stage.path / cost.FILE, record)
    manifest.write(stage.path)  # last: the stage is finished from here on
    runs.append_jsonl(_ledger(plan, stage), [{"schema_version": cost.SCHEMA_VERSION, "stage": stage.label,
                                              "path": str(stage.path), "device": record["device"],
                                              "wall_seconds": wall, "finished": time.time(), "cost": record["work"]}])
    progress(f"[{stage.label}] {headline(stage.name, stage.path)} ({wall:.0f} s)")


def _home(plan: Plan, stage: Stage) -> Path:
    """The folder whose lock and ledger a stage shares: its own, the shared stages' or the run's."""
    return stage.home or plan.shared_dir if stage.shared else plan.run_dir


def _ledger(plan: Plan, stage: Stage):
    return _home(plan, stage) / "ledger.jsonl"


def _older(plan: Plan, stage: Stage) -> bool:
    """Whether `stage` was finished by a harness that wrote no manifests: its ledger line (written
    when it finished) has no schema_version. Without a ledger line it stopped before finishing."""
    rows = [r for r in runs.read_complete_jsonl(_ledger(plan, stage)) if r["stage"] == stage.label]
    return bool(rows) and "schema_version" not in rows[-1]


def _changed(old: dict, new: dict) -> list[str]:
    """The keys (nested ones as `section.lora.r`) whose recorded value differs from the plan's
    (execution settings such as the response cache may change)."""
    old = {s: cfgmod.flatten(cfgmod.recorded(s, old.get(s, {}))) for s in new}
    new = {s: cfgmod.flatten(json.loads(json.dumps(v, default=str))) for s, v in new.items()}
    return sorted(f"{s}.{k}" for s in new for k in new[s]
                  if not spec.execution_key(k) and old[s].get(k) != new[s][k])


def collect(plan: Plan) -> dict:
    """Scores of every evaluated policy and wall seconds of every stage, from the stage records."""
    from harness.report.tables import versus

    walls = {}
    for ledger in (plan.initial_dir / "ledger.jsonl", plan.shared_dir / "ledger.jsonl", plan.run_dir / "ledger.jsonl"):
        walls.update({row["stage"]: row["wall_seconds"] for row in runs.read_complete_jsonl(ledger)})
    rows, initial = [], {}
    for stage in plan.stages:
        if stage.name.startswith("eval"):
            stats = json.loads((stage.path / "stats.json").read_text())
            items = {r["id"]: r["score"] for r in runs.read_complete_jsonl(stage.path / "per_instance.jsonl")}
            policy = {"eval": "dpo", "eval_sft": "sft"}[stage.name] if stage.iteration is not None else "initial"
            if policy == "initial":
                initial = items
            # paired over the test items, with the MDD: whether training moved the policy at all
            rows.append({"policy": policy, "iteration": stage.iteration, "metric": stats["metric"],
                         "mean": stats["mean"], "stderr": stats["stderr"], "n": stats["n"],
                         "tokens_per_dialogue": stats["mean_tokens_per_dialogue"],
                         "answer_mode": stats.get("answer_mode", "generate"),
                         **({"references": stats["references"]} if "references" in stats else {}),
                         "vs_initial": None if policy == "initial" else versus([items], [initial])})
    counts, training = {}, {}
    for it in range(plan.run.iterations):
        mine = plan.run_dir / f"it{it}"
        selection = json.loads((mine / "select" / spec.FILE).read_text())
        counts[f"it{it}"] = {"candidates": selection["candidates"], "selected": selection["selected"]}
        dpo = json.loads((mine / "dpo" / "stats.json").read_text())
        last = [r for r in runs.read_complete_jsonl(mine / "dpo" / "train_log.jsonl") if "rewards/margins" in r]
        training[f"it{it}"] = {"dpo_pairs": dpo["pairs"], "dpo_dropped_prompt_too_long": dpo["dropped_prompt_too_long"],
                               "dpo_train_loss": dpo["train_loss"], "dpo_steps": dpo["steps"],
                               **{f"last_{k}": last[-1][k] for k in ("rewards/margins", "rewards/accuracies")
                                  if last}}
    return {"run_id": plan.run_id, "selector": plan.run.selector, "task": plan.run.task, "seed": plan.run.seed,
            "scores": rows, "pairs": counts, "training": training, "wall_seconds": walls}
