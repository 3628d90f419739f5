"""The same greedy evaluation through the in-process engine (`backend=hf`) and through llama.cpp's
server (`backend=llama.cpp`: the policy exported to GGUF and served on loopback), side by side.

    python benchmarks/server_throughput.py [--data-dir ../shared/data] [--task cbt] [--limit 20]
        [--answer-mode generate] [--model smollm2-135m] [--precision f32] [--rounds 1] [--out DIR]
    python benchmarks/server_throughput.py --choice-probe [--model smollm2-135m]

Rounds alternate the two engines, so drift of the machine's speed weighs on both. Prints each
evaluation's wall seconds (model load apart: for llama.cpp that is the export, once, and the server's
start), utterances and completion tokens per second, its score, and then whether the engines agree:
the mean paired difference of the item scores with its 95% interval and the minimum detectable
difference (MDD) of that sample, and the share of items whose transcripts are identical.

`--choice-probe` times prompt scoring alone instead: one CBT-sized choice (a context of about 1,000
tokens, 10 options) scored by each engine, and the largest difference of their log-likelihoods.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from tabulate import tabulate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness.bench.engines import ENGINES, engine_run  # noqa: E402
from harness.report import power  # noqa: E402
from harness.report.tables import paired_difference  # noqa: E402


def choice_probe(model: str, precision: str) -> None:
    from harness.backends.base import Choice
    from harness.backends.hf import HFBackend
    from harness.backends.llamacpp import LlamaCppBackend
    from harness.config import ServerConfig

    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 100)
    choice = Choice([{"role": "user", "content": text}], tuple(f" option{i}" for i in range(10)), prefix="<A>")
    scored = {}
    engines = {"hf": lambda: HFBackend(model),
               "llama.cpp": lambda: LlamaCppBackend(model, ServerConfig(precision=precision))}
    for name, build in engines.items():
        backend = build()
        start = time.perf_counter()
        scored[name] = backend.loglikelihood([choice])[0]
        print(f"{name}: {time.perf_counter() - start:.2f} s for {len(choice.continuations)} options")
    print("largest difference:", max(abs(a - b) for (a, _), (b, _) in zip(*scored.values())))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="default: the task's own (CBT: built from the shipped books)")
    p.add_argument("--task", default="cbt")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--answer-mode", default="generate", choices=["generate", "choice"])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--precision", default="f32", choices=["f32", "f16"])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--out", help="where the evaluations' records go (default: a temporary directory)")
    p.add_argument("--choice-probe", action="store_true", help="time the scoring of one choice instead")
    args = p.parse_args()
    if args.choice_probe:
        choice_probe(args.model, args.precision)
        return
    root = args.out or tempfile.mkdtemp(prefix="server-throughput-")

    rows, results = [], {}
    # Rounds alternate the engines, so drift of the machine's speed weighs on both.
    for r in range(args.rounds):
        for engine in ENGINES:
            run, result = engine_run(engine, os.path.join(root, f"{engine}-{r}"), task=args.task, model=args.model,
                                     limit=args.limit, data_dir=args.data_dir, answer_mode=args.answer_mode,
                                     max_new_tokens=args.max_new_tokens, server={"precision": args.precision})
            rows.append([engine, r, round(run["load_seconds"], 1), round(run["eval_seconds"], 1),
                         round(run["utterances_per_second"], 3), round(run["completion_tokens_per_second"], 1),
                         run["requests"], round(run["score"], 4)])
            results[engine] = result.per_instance
    print(tabulate(rows, ["engine", "round", "load s", "eval s", "utterances/s", "completion tok/s", "requests",
                          "score"], tablefmt="github"))

    hf, served = ({row["id"]: row for row in results[e]} for e in ENGINES)
    items = sorted(hf.keys() & served.keys())
    diffs = [served[i]["score"] - hf[i]["score"] for i in items]
    agreement = paired_difference(diffs) | {"mdd": power.paired_mdd(diffs, [hf[i]["score"] for i in items])}
    def said(row):
        return [t["text"] for t in row["transcript"]]

    identical = sum(said(hf[i]) == said(served[i]) for i in items)
    print(f"\nllama.cpp - hf over {len(items)} items: {json.dumps(agreement)}")
    print(f"identical transcripts: {identical}/{len(items)}; records in {root}")


if __name__ == "__main__":
    main()
