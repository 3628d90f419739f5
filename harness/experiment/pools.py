"""The disjoint question pools of a run: per iteration, its SFT, tree-search and probe rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.config import RunConfig, SynthConfig
from harness.errors import HarnessError
from harness.selection import SELECTORS
from harness.tasks import get_task

if TYPE_CHECKING:
    from harness.experiment.plan import Plan


def pool_ranges(run: RunConfig, synth: SynthConfig) -> list[dict[str, tuple[int, int]]]:
    """Per iteration, the train rows [lo, hi) of its SFT, tree-search and probe pools: each iteration
    draws fresh questions after the last one's (as the reference's stateful loaders do)."""
    sizes = {"sft": run.sft.questions, "mcts": synth.questions, "probe": synth.probe_size}
    out, lo = [], 0
    for _ in range(run.iterations):
        ranges = {}
        for name, size in sizes.items():
            ranges[name] = (lo, lo + size)
            lo += size
        out.append(ranges)
    return out


def check_pools(plan: Plan) -> dict:
    """The question ids of every pool; fails when the splits cannot hold them disjointly."""
    run, synth, select = plan.run, plan.synth, plan.select
    task = get_task(run.task, context_mode=run.context_mode, seed=run.seed)
    train = task.load("train", run.data_dir, None, run.online)
    ranges = pool_ranges(run, synth)
    need = ranges[-1]["probe"][1]
    if len(train) < need:
        raise HarnessError(
            f"{run.task}/train has {len(train)} questions; the disjoint pools need {need} ({run.iterations} "
            f"iteration(s) x (sft.questions {run.sft.questions} + synth.questions {synth.questions} + "
            f"synth.probe_size {synth.probe_size})); lower them, or use more data (for CBT: harness data build-cbt)")
    pools = {(name if run.iterations == 1 else f"it{it}/{name}"): train[lo:hi]
             for it, by_name in enumerate(ranges) for name, (lo, hi) in by_name.items()}
    if SELECTORS.get(select.selector).influence:
        influence = select.influence
        validation = task.load(influence.val_split, run.data_dir, influence.validation_size, run.online)
        if len(validation) < influence.validation_size:
            raise HarnessError(f"{run.task}/{influence.val_split} has {len(validation)} questions; "
                               f"influence.validation_size is {influence.validation_size}: lower it, or use more data")
        pools["influence_validation"] = validation
    pools["test"] = task.load("test", run.data_dir, run.test_questions, run.online)
    for name, pool in pools.items():
        if not pool:
            raise HarnessError(f"{run.task}: the {name} pool is empty")
    return {name: [q.id for q in pool] for name, pool in pools.items()} | {"source": task.source}
