"""Runs a plan's unfinished stages; writes the run's spec, status, ledger and results records."""

from __future__ import annotations

import json
import sys
import time

from harness import config as cfgmod
from harness import runs
from harness.errors import HarnessError
from harness.experiment.plan import Plan
from harness.experiment.pools import check_pools
from harness.experiment.work import headline, stage_cost


def execute(plan: Plan, resume: bool = False, progress=print) -> dict:
    """Run every unfinished stage of `plan`; returns the results record (also results.json)."""
    pools = check_pools(plan)
    spec_path = plan.run_dir / "run_spec.json"
    configs = plan.configs()
    if spec_path.exists():
        if not resume:
            raise HarnessError(f"{plan.run_dir} exists; --resume continues it (or remove it)")
        changed = _changed(json.loads(spec_path.read_text())["config"], configs)
        if changed:
            raise HarnessError(f"{plan.run_dir}: the config changed since the run started ({', '.join(changed)}); "
                               "resume with the same config, or start a new run")
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if not spec_path.exists():
        runs.write_json(spec_path, {
            "run_id": plan.run_id, "kind": "run", "config": configs, "seed": plan.run.seed,
            "shared_stages": str(plan.shared_dir), "shared_key": plan.key, "pools": pools,
            "stages": [{"stage": s.label, "path": str(s.path), "shared": s.shared} for s in plan.stages],
            "versions": runs.versions(), "device": runs.device_info(plan.run.device), "git_sha": runs.git_sha(),
            "command": sys.argv})
    for stage in plan.stages:
        if stage.path.is_dir():
            progress(f"[{stage.label}] done: {stage.path}")
            continue
        _status(plan, "running", stage.label)
        progress(f"[{stage.label}] {stage.does}")
        started = time.time()
        try:
            stage.run(stage.path)
        except BaseException:
            _status(plan, "failed", stage.label)
            raise
        ledger = (plan.shared_dir if stage.shared else plan.run_dir) / "ledger.jsonl"
        runs.append_jsonl(ledger, [{"stage": stage.label, "path": str(stage.path), "device": plan.run.device,
                                    "wall_seconds": time.time() - started, "finished": time.time(),
                                    "cost": stage_cost(stage.name, stage.path)}])
        progress(f"[{stage.label}] {headline(stage.name, stage.path)} ({time.time() - started:.0f} s)")
    results = collect(plan)
    runs.write_json(plan.run_dir / "results.json", results)
    _status(plan, "complete", None)
    return results



def _changed(old: dict, new: dict) -> list[str]:
    old = {section: cfgmod.recorded(section, old.get(section, {})) for section in new}
    return sorted(f"{section}.{k}" for section in new for k in new[section]
                  if old[section].get(k) != json.loads(json.dumps(new[section][k], default=str)))


def _status(plan: Plan, state: str, stage: str | None) -> None:
    with runs.atomic_file(plan.run_dir / "status.json") as tmp:
        runs.write_json(tmp, {"state": state, "stage": stage, "time": time.time()})


def collect(plan: Plan) -> dict:
    """Scores of every evaluated policy and wall seconds of every stage, from the stage records."""
    from harness.report.tables import versus

    walls = {}
    for ledger in (plan.shared_dir / "ledger.jsonl", plan.run_dir / "ledger.jsonl"):
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
        spec = json.loads((mine / "select" / "run_spec.json").read_text())
        counts[f"it{it}"] = {"candidates": spec["candidates"], "selected": spec["selected"]}
        dpo = json.loads((mine / "dpo" / "stats.json").read_text())
        last = [r for r in runs.read_complete_jsonl(mine / "dpo" / "train_log.jsonl") if "rewards/margins" in r]
        training[f"it{it}"] = {"dpo_pairs": dpo["pairs"], "dpo_dropped_prompt_too_long": dpo["dropped_prompt_too_long"],
                               "dpo_train_loss": dpo["train_loss"], "dpo_steps": dpo["steps"],
                               **{f"last_{k}": last[-1][k] for k in ("rewards/margins", "rewards/accuracies")
                                  if last}}
    return {"run_id": plan.run_id, "selector": plan.run.selector, "task": plan.run.task, "seed": plan.run.seed,
            "scores": rows, "pairs": counts, "training": training, "wall_seconds": walls}
