"""Tree-search rollouts per second, batched across trees against one tree at a time, in one run.

    python benchmarks/synth_throughput.py [--task hotpotqa] [--questions 4] [--model smollm2-135m]

Runs the same search (same questions, budget and fixed T_norm, so no probe) twice: with all trees'
rollouts advancing together (`trees_per_batch` = the number of questions) and with one tree at a
time (`trees_per_batch=1`), and prints rollouts, generated tokens and rollouts per second. Sampled
rollouts draw different tokens in the two schedules (the seeds are per batch), so their rollouts
differ in length and tokens per second is shown beside rollouts per second; `--temperature 0`
makes every rollout greedy, so both schedules do the same work (check the generated tokens) and
rollouts per second compare directly.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.bench.search import search_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="hotpotqa")
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    p.add_argument("--explore-time", type=int, default=2)
    p.add_argument("--expand-time", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7, help="rollout temperature (0: greedy)")
    args = p.parse_args()

    rows = []
    for name, per_batch in (("batched across trees", args.questions), ("one tree at a time", 1)):
        with tempfile.TemporaryDirectory() as tmp:
            run = search_run(per_batch, f"{tmp}/run", task=args.task, model=args.model, data_dir=args.data_dir,
                             questions=args.questions, explore_time=args.explore_time, expand_time=args.expand_time,
                             t_norm=200, max_new_tokens=args.max_new_tokens, rollout_temperature=args.temperature)
        rows.append([name, run["rollouts"], f"{run['search_seconds']:.1f}", f"{run['total_seconds']:.1f}",
                     run["completion_tokens"], run["encoded_prompt_tokens"], f"{run['rollouts_per_second']:.3f}",
                     f"{run['completion_tokens_per_second']:.1f}", run["pairs"]])
    base = float(rows[0][6])
    for row in rows:
        row.append(f"{base / float(row[6]):.2f}x")
    print(json.dumps(vars(args)), f"{os.cpu_count()} cores")
    print(tabulate(rows, ["schedule", "rollouts", "search s", "total s", "generated tok", "encoded prompt tok",
                          "rollouts/s", "generated tok/s", "pairs", "time per rollout vs batched"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
