"""One greedy evaluation's throughput on an engine: the in-process transformers engine (`hf`) or
llama.cpp's server (`llama.cpp`, the policy exported to GGUF and served on loopback). `harness bench`
and `benchmarks/server_throughput.py` run it on both, rounds alternating between them (the machine's
speed drifts)."""

from __future__ import annotations

from pathlib import Path

from harness.evaluation import EvalResult, evaluate

ENGINES = ("hf", "llama.cpp")


def engine_run(engine: str, out: Path | str, **settings) -> tuple[dict, EvalResult]:
    """One evaluation on `engine` (`settings`: `evaluate`'s config keys) and its throughput; the
    model's load (for llama.cpp, the export, once, and the server's start) is timed apart."""
    result = evaluate(backend=engine, out=str(out), **settings)
    c = result.cost
    work = c["wall_seconds"] - c["model_load_seconds"]
    utterances = sum(row["turns"] for row in result.per_instance)
    return {"engine": engine, "load_seconds": c["model_load_seconds"], "eval_seconds": work,
            "dialogues": len(result.per_instance), "utterances": utterances,
            "completion_tokens": c["completion_tokens"], "requests": c["requests"],
            "dialogues_per_second": len(result.per_instance) / work, "utterances_per_second": utterances / work,
            "completion_tokens_per_second": c["completion_tokens"] / work,
            "score": result.stats["mean"]}, result

