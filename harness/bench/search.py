"""Tree-search throughput: one `harness synth` search, timed. Used by `harness bench` and
`benchmarks/synth_throughput.py`."""

from __future__ import annotations

import time
from pathlib import Path

from harness.synth.synthesis import synthesize


def search_run(trees_per_batch: int, out: Path | str, **settings) -> dict:
    """The search of `settings` (`synthesize`'s config keys; a fixed `t_norm`, so no probe) with
    `trees_per_batch` trees' rollouts advancing together: its rollouts and generated tokens per
    second of search."""
    started = time.perf_counter()
    result = synthesize(trees_per_batch=trees_per_batch, out=str(out), **settings)
    search = result.cost["search"]
    seconds = search["wall_seconds"]
    return {"rollouts": search["rollouts"], "search_seconds": seconds, "total_seconds": time.perf_counter() - started,
            "completion_tokens": search["completion_tokens"],
            "encoded_prompt_tokens": search["prompt_tokens"] - search["cached_tokens"],
            "rollouts_per_second": search["rollouts"] / seconds,
            "completion_tokens_per_second": search["completion_tokens"] / seconds, "pairs": result.summary["pairs"]}
