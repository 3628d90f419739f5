"""DITS influence, reference path against fast path, measured side by side in one run.

    python benchmarks/influence_paths.py --data-dir ../shared/data [--task hotpotqa] [--units 8]
        [--validation-size 10] [--eta 5e-5] [--warmup-steps 1] [--model smollm2-135m] [--pairs FILE]
        [--roster information_exchange_3]

Both paths estimate the same units on the same warmed-up theta* (same seed): the reference decodes
each unit's V validation dialogues in full, the fast path checks theta*'s as a draft and decodes only
those that diverge. Their units run interleaved, unit by unit, so that drift of the machine's speed
over the run weighs on both alike. Prints each path's seconds (warm-up, theta* validation, unit steps,
unit validation, split for the fast path into draft checks and decoding), the speed-up of the units,
and whether the two give the same F per unit (a difference is only allowed within a counted near-tie).

Without --pairs, each unit is one pair on a train question: the gold answer at Alice's first turn
preferred over another question's answer. Real search pairs (`harness synth`) have longer responses;
the units' cost is dominated by the validation dialogues either way.
"""

from __future__ import annotations

import argparse
import json
import os

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness import config, models  # noqa: E402
from harness.config import SelectConfig  # noqa: E402
from harness.dits.influence import PATHS, prepare  # noqa: E402
from harness.mas.dialogue import start  # noqa: E402
from harness.mas.roster import roster_for  # noqa: E402
from harness.tasks import get_task  # noqa: E402


def gold_pairs(task_name: str, model: str, data_dir: str | None, n: int, roster: str | None) -> list[dict]:
    team = roster_for(get_task(task_name).setting, roster)
    task = get_task(task_name, slots=team.slots)
    sha = models.weights_hash(models.resolve(model))
    questions = task.load("train", data_dir, n + 1)
    if len(questions) < n + 1:
        raise SystemExit(f"{task_name}/train has {len(questions)} questions; {n + 1} needed")
    rows = []
    for i, d in enumerate(start(questions[:n], team)):
        q, other = d.question, questions[i + 1]
        rows.append({"pair_id": f"{task_name}:{q.id}/bench", "question_id": q.id, "task": task_name,
                     "policy": {"name": model, "sha256": sha}, "prompt": d.messages(0),
                     "chosen": f"Alice: <A>{q.golds[0]}</A>", "rejected": f"Alice: <A>{other.golds[0]}</A>",
                     "q_chosen": 0.5, "q_rejected": 0.0})
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="hotpotqa")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    p.add_argument("--pairs", help="pairs.jsonl of `harness synth` (default: gold-answer pairs, one per unit)")
    p.add_argument("--units", type=int, default=8)
    p.add_argument("--unit-size", type=int, default=1)
    p.add_argument("--validation-size", type=int, default=10)
    p.add_argument("--eta", type=float, default=5e-5)
    # The warm-up is the same work in both paths (about 75 s a step of 4 HotpotQA pairs on 2 cores).
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--config", default="cpu", help="preset whose select section sets the other knobs")
    p.add_argument("--roster", help="the agents (harness ls rosters; default: the task's setting's)")
    args = p.parse_args()

    if args.pairs:
        pairs = [json.loads(line) for line in open(args.pairs)][:args.units * args.unit_size]
    else:
        pairs = gold_pairs(args.task, args.model, args.data_dir, args.units * args.unit_size, args.roster)
    overrides = ["selector=dits", f"model={args.model}", f"validation_size={args.validation_size}",
                 f"unit_size={args.unit_size}", f"eta={args.eta}", "eta_auto=false",
                 f"warmup_steps={args.warmup_steps}"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.roster:
        overrides.append(f"roster={args.roster}")
    # Both paths begin in turn (warm-up, theta*'s validation dialogues); then their units interleave,
    # each reference unit right after the fast path's step and checks of the same unit, so that a
    # machine whose speed drifts over the hour weighs on both alike. A path's unit seconds are its own.
    began = {}
    for path in ("reference", "fast"):
        cfg = config.build(SelectConfig, args.config, overrides + [f"influence.path={path}"])
        impl = PATHS[path](pairs, cfg, *prepare(pairs, cfg))
        began[path] = (impl, impl.begin())
    (ref_path, ref_start), (fast_path, fast_start) = began["reference"], began["fast"]
    ref_scored = []

    def reference_unit(i: int) -> None:
        ref_scored.append(ref_path.unit_step(ref_start.theta_star, ref_start.units[i], ref_start.eta,
                                             ref_start.answers_before))

    fast_scored = fast_path.unit_scores(fast_start.theta_star, fast_start.units, fast_start.eta,
                                        fast_start.answers_before, "units, interleaved", between=reference_unit)
    estimates, rows = {}, []
    for path, scored in (("reference", ref_scored), ("fast", fast_scored)):
        impl, start = began[path]
        est = estimates[path] = impl.finish(start, scored, sum(impl.unit_seconds.values()))
        checks = est.drafts.get("check_seconds")
        rows.append([path, f"{est.seconds['warmup']:.0f}", f"{est.seconds['calibration']:.0f}",
                     f"{est.seconds['units']:.0f}",
                     f"{est.unit_seconds['step']:.0f}", f"{est.unit_seconds['validation']:.0f}",
                     "" if checks is None else f"{checks:.0f}",
                     "" if checks is None else f"{est.drafts['decode_seconds']:.0f}"])
    ref, fast = estimates["reference"], estimates["fast"]
    print(tabulate(rows, headers=["path", "warm-up s", "theta* validation s", "units s", "steps s", "validation s",
                                  "draft checks s", "decoding s"], tablefmt="github"))
    print(f"\n{len(ref.units)} units of {args.unit_size} pair(s), V = {args.validation_size}, eta {args.eta}, "
          f"{args.model} on {args.task}, {os.cpu_count()} CPUs")
    print(f"units: {ref.seconds['units'] / fast.seconds['units']:.2f}x faster; unit validation: "
          f"{ref.unit_seconds['validation'] / fast.unit_seconds['validation']:.2f}x faster")
    print(f"F(theta*) {ref.f_before:.4f} / {fast.f_before:.4f}; F(theta') per unit equal: "
          f"{ref.f_after == fast.f_after}; changed answers equal: {ref.changed_answers == fast.changed_answers}")
    print(f"reference F(theta'): {[round(f, 4) for f in ref.f_after]}, changed answers {ref.changed_answers}")
    print(f"fast F(theta'):      {[round(f, 4) for f in fast.f_after]}, changed answers {fast.changed_answers}")
    print(f"fast path drafts: {json.dumps({k: round(v, 1) for k, v in fast.drafts.items()})}")
    print(f"fast path decoding: {fast.usage['completion_tokens']} tokens generated in all (theta*'s drafts "
          f"included), {fast.usage['guessed_tokens']} of them taken from lookahead guesses")


if __name__ == "__main__":
    main()
