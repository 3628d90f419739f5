"""DITS influence, reference path against fast path, measured side by side in one run.

    python benchmarks/influence_paths.py --data-dir ../shared/data [--task hotpotqa] [--units 8]
        [--validation-size 10] [--eta 5e-5] [--warmup-steps 1] [--model smollm2-135m] [--pairs FILE]
        [--roster information_exchange_3] [--answer-mode choice|generate]

Both paths estimate the same units on the same warmed-up theta* (same seed): the reference decodes
each unit's V validation dialogues in full, the fast path checks theta*'s as a draft and decodes only
those that diverge. Their units run interleaved, unit by unit, so that drift of the machine's speed
over the run weighs on both alike. Prints each path's seconds (warm-up, theta* validation, unit steps,
unit validation, split for the fast path into draft checks and decoding), the speed-up of the units,
and whether the two give the same F per unit (a difference is only allowed within a counted near-tie).

Without --pairs, each unit is one pair on a train question: the gold answer at Alice's first turn
preferred over a wrong one (`harness.bench.influence.gold_pairs`), in the task's answer mode for
--answer-mode (choice where the task has options). Also printed: the fast path's certified dialogues,
the audit's wrong certifications, and in choice mode the utterances whose options it scored again. Real search pairs (`harness synth`) have longer responses;
the units' cost is dominated by the validation dialogues either way.
"""

from __future__ import annotations

import argparse
import json
import os

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.bench.influence import gold_pairs, interleaved  # noqa: E402
from harness.dits.influence import answer_mode  # noqa: E402


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
    p.add_argument("--answer-mode", default="choice",
                   help="choice (tasks with options; others generate) or generate: the gold pairs' answer mode")
    args = p.parse_args()

    if args.pairs:
        pairs = [json.loads(line) for line in open(args.pairs)][:args.units * args.unit_size]
    else:
        pairs = gold_pairs(args.task, args.model, args.data_dir, args.units * args.unit_size, args.roster,
                           args.answer_mode)
    overrides = ["selector=dits", f"model={args.model}", f"validation_size={args.validation_size}",
                 f"unit_size={args.unit_size}", f"eta={args.eta}", "eta_auto=false",
                 f"warmup_steps={args.warmup_steps}"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.roster:
        overrides.append(f"roster={args.roster}")
    # The two paths' units run interleaved (harness.bench.influence), so drift weighs on both alike.
    estimates, rows = interleaved(pairs, args.config, overrides), []
    for path, est in estimates.items():
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
    d = fast.drafts
    print(f"fast path: {d['decoded_dialogues']} of {d['verified_dialogues'] + d['decoded_dialogues']} unit dialogues diverged; {d['certified_dialogues']} "
          f"certified, {d['audited_dialogues']} of them audited, {d['wrong_certifications']} wrongly; "
          f"certificates' precomputation {d['certify_seconds']:.0f} s; answer_mode {answer_mode(pairs)}: "
          f"{d['rescored_utterances']} utterances rescored, {d['changed_choices']} answers moved")
    print(f"fast path drafts: {json.dumps({k: round(v, 1) for k, v in fast.drafts.items()})}")
    print(f"fast path decoding: {fast.usage['completion_tokens']} tokens generated in all (theta*'s drafts "
          f"included), {fast.usage['guessed_tokens']} of them taken from lookahead guesses")


if __name__ == "__main__":
    main()
