"""Generation throughput of the two-agent dialogue loop, measured side by side in one run.

    python benchmarks/dialogue_throughput.py [--task hotpotqa] [--n 8] [--model smollm2-135m]

Runs the same greedy dialogues three ways and prints completion tokens per second:
all dialogues batched with per-agent key/value caches (the default), all batched re-encoding every
prompt, and one dialogue at a time with caches. Greedy decoding makes the three transcripts equal,
which is checked, so the ratios compare the same work.
"""

from __future__ import annotations

import argparse
import os
import time

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.backends import Usage  # noqa: E402
from harness.backends.hf import HFBackend  # noqa: E402
from harness.mas.dialogue import DialogueConfig, run_dialogues, start  # noqa: E402
from harness.tasks import get_task  # noqa: E402


def run(backend, questions, setting, cfg, one_at_a_time: bool):
    backend.usage = Usage()
    started = time.perf_counter()
    groups = [[q] for q in questions] if one_at_a_time else [questions]
    dialogues = [d for g in groups for d in run_dialogues(start(g, setting), backend, cfg, seed=0)]
    wall = time.perf_counter() - started
    return dialogues, wall, backend.usage.completion_tokens, backend.usage.prompt_tokens, backend.usage.cached_tokens


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="hotpotqa")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"))
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-turns", type=int, default=4)
    args = p.parse_args()

    task = get_task(args.task)
    questions = task.load("test", args.data_dir, args.n)
    cfg = DialogueConfig(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    backend = HFBackend(args.model, batch_size=max(args.n, 1))
    modes = [("batched, kv cache", True, False), ("batched, no kv cache", False, False),
             ("batch 1, kv cache", True, True)]
    rows, transcripts = [], []
    for name, kv, single in modes:
        backend.kv_cache = kv
        dialogues, wall, completion, prompt, cached = run(backend, questions, task.setting, cfg, single)
        transcripts.append([[u.text for u in d.utterances] for d in dialogues])
        rows.append([name, f"{wall:.1f}", completion, prompt, cached, f"{completion / wall:.1f}"])
    base = float(rows[0][1])
    for row in rows:
        row.append(f"{float(row[1]) / base:.2f}x")
    print(f"{args.task}, {len(questions)} dialogues, {args.model}, max_turns={args.max_turns}, "
          f"max_new_tokens={args.max_new_tokens}, {os.cpu_count()} cores")
    print(tabulate(rows, ["mode", "wall s", "completion tok", "prompt tok", "cached prompt tok",
                          "completion tok/s", "time vs batched+kv"], tablefmt="github"))
    print("identical transcripts across modes:", all(t == transcripts[0] for t in transcripts))


if __name__ == "__main__":
    main()
