"""The parts of `harness bench`, one function each: `part(bench) -> result`, a result holding
`figures` (name -> `record.figure`), optionally `details` (what the figures were computed from)
and `unavailable` (name -> why: an engine that could not run, recorded instead of failing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from harness.bench import decode as dec
from harness.bench.record import figure
from harness.bench.subject import matmul_weights

if TYPE_CHECKING:
    from harness.bench.run import Bench

# The GGUF the llama.cpp server is given, in the precision the hf engine runs.
GGUF_PRECISION = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def limits(bench: Bench) -> dict:
    from harness.bench.limits import matmul_peak, memory_bandwidth

    s = bench.sizes
    peak = matmul_peak(bench.device, getattr(torch, bench.dtype), s.matmul, s.reps)
    bandwidth = memory_bandwidth(bench.device, s.copy_bytes, s.reps)
    return {"figures": {
        "matmul_peak": figure(peak, "FLOP/s", f"torch.mm, {s.matmul}x{s.matmul} {bench.dtype}, best of {s.reps}"),
        "memory_bandwidth": figure(bandwidth, "bytes/s", f"copy of {s.copy_bytes >> 20} MiB, read + write, "
                                                         f"best of {s.reps}")}}


def decode(bench: Bench) -> dict:
    s = bench.sizes
    model = bench.subject.model()
    params, weight_bytes = matmul_weights(model)
    rates = dec.decode_rates(model, (1, s.decode_batch), s.decode_prompt, s.decode_steps, s.decode_rounds)
    figures = {}
    for batch, steps_per_second in rates.items():
        figures[f"decode_b{batch}_tokens_per_second"] = figure(
            batch * steps_per_second, "tokens/s", f"greedy, batch {batch}, {s.decode_steps} steps after "
                                                  f"{s.decode_prompt} prompt tokens, best of {s.decode_rounds}")
    figures["batching_speedup"] = figure(rates[s.decode_batch] * s.decode_batch / rates[1], "x",
                                         f"tokens/s at batch {s.decode_batch} over batch 1")
    limits = bench.results.get("limits", {}).get("figures")
    if not limits:
        return {"figures": figures, "unavailable": {"fractions": "the limits part did not run"}}
    peak, bandwidth = limits["matmul_peak"]["value"], limits["memory_bandwidth"]["value"]
    for batch, steps_per_second in rates.items():
        figures[f"decode_b{batch}_compute_fraction"] = figure(
            dec.flop_fraction(params, batch * steps_per_second, peak), "of peak",
            f"2 x {params} params x tokens/s / matmul peak")
        figures[f"decode_b{batch}_bandwidth_fraction"] = figure(
            dec.bandwidth_fraction(weight_bytes, steps_per_second, bandwidth), "of bandwidth",
            f"{weight_bytes} weight bytes x steps/s / memory bandwidth")
    return {"figures": figures, "details": {"steps_per_second": rates}}


def dialogues(bench: Bench) -> dict:
    from harness.bench.engines import ENGINES, engine_run

    s = bench.sizes
    settings = dict(task=bench.task, model=bench.subject.directory(), limit=s.dialogues, data_dir=bench.data_dir,
                    answer_mode="generate", max_turns=s.max_turns, max_new_tokens=s.max_new_tokens,
                    batch_size=s.dialogues, device=bench.device, dtype=bench.dtype, seed=bench.seed,
                    server={"precision": GGUF_PRECISION[bench.dtype]})
    runs, unavailable, engines = {e: [] for e in ENGINES}, {}, ENGINES
    for r in range(s.dialogue_rounds):  # the engines alternate round by round: the machine's speed drifts
        for engine in engines:
            try:
                runs[engine].append(engine_run(engine, bench.workdir / f"{engine}-{r}", **settings)[0])
            # The server is an outside program (its build, its GGUF export of this architecture, its
            # start): whatever stops it is recorded as its result, and the other engine's still count.
            except Exception as e:  # noqa: BLE001
                if engine == "hf":
                    raise
                unavailable[f"{engine}_dialogues_per_second"] = f"{type(e).__name__}: {e}"
        engines = tuple(e for e in engines if f"{e}_dialogues_per_second" not in unavailable)
    figures = {}
    for engine, rows in runs.items():
        if rows:
            seconds = sum(row["eval_seconds"] for row in rows)
            figures[f"{engine}_dialogues_per_second"] = figure(
                sum(row["dialogues"] for row in rows) / seconds, "dialogues/s",
                f"{bench.task}, {s.dialogues} two-agent dialogues batched, up to {s.max_turns} turns of "
                f"{s.max_new_tokens} tokens, greedy, {len(rows)} round(s)")
            figures[f"{engine}_completion_tokens_per_second"] = figure(
                sum(row["completion_tokens"] for row in rows) / seconds, "tokens/s",
                "generated tokens over eval seconds")
    if runs["hf"] and runs["llama.cpp"]:
        figures["hf_over_llama_cpp"] = figure(figures["hf_dialogues_per_second"]["value"]
                                              / figures["llama.cpp_dialogues_per_second"]["value"], "x",
                                              "hf dialogues/s over llama.cpp's")
    return {"figures": figures, "unavailable": unavailable, "details": runs}


def search(bench: Bench) -> dict:
    from harness.bench.search import search_run

    s = bench.sizes
    row = search_run(s.trees, bench.workdir / "search", task=bench.task, model=bench.subject.directory(),
                     data_dir=bench.data_dir, questions=s.trees, explore_time=s.explore_time,
                     expand_time=s.expand_time, t_norm=200, max_new_tokens=s.max_new_tokens,
                     max_turns=s.max_turns, device=bench.device, dtype=bench.dtype, seed=bench.seed)
    what = (f"{bench.task}, {s.trees} trees batched, {s.explore_time} x {s.expand_time} rollouts, "
            f"cap {s.max_new_tokens}")
    return {"figures": {"rollouts_per_second": figure(row["rollouts_per_second"], "rollouts/s", what),
                        "search_completion_tokens_per_second": figure(row["completion_tokens_per_second"],
                                                                      "tokens/s", "generated tokens in the search")},
            "details": row}


def influence(bench: Bench) -> dict:
    from harness.bench.influence import gold_pairs, interleaved

    s = bench.sizes
    model = bench.subject.directory()
    pairs = gold_pairs(bench.task, model, bench.data_dir, s.units)
    overrides = ["selector=dits", f"model={model}", f"task={bench.task}", f"device={bench.device}",
                 f"dtype={bench.dtype}", f"validation_size={s.validation_size}", "unit_size=1", f"eta={s.eta}",
                 "eta_auto=false", f"warmup_steps={s.warmup_steps}", f"warmup_batch={s.units}",
                 f"max_turns={s.max_turns}", f"max_new_tokens={s.max_new_tokens}", f"seed={bench.seed}"]
    if bench.data_dir:
        overrides.append(f"data_dir={bench.data_dir}")
    estimates = interleaved(pairs, None, overrides)
    what = f"{bench.task}, units of 1 pair, V = {s.validation_size}, eta {s.eta}, interleaved"
    figures = {f"{path}_units_per_second": figure(len(e.units) / e.seconds["units"], "units/s", f"{path} path, {what}")
               for path, e in estimates.items()}
    ref, fast = estimates["reference"], estimates["fast"]
    figures["fast_over_reference"] = figure(ref.seconds["units"] / fast.seconds["units"], "x",
                                            "reference unit seconds over the fast path's")
    figures["same_f_per_unit"] = figure(ref.f_after == fast.f_after, "bool", "the two paths' F per unit agree")
    # One value of F over every unit and theta* is no signal: the agreement above then tests nothing.
    figures["distinct_f_values"] = figure(len({ref.f_before, *ref.f_after}), "count",
                                          "distinct F over theta* and the units (1: no signal)")
    return {"figures": figures, "details": {p: {"seconds": e.seconds, "unit_seconds": e.unit_seconds,
                                                "f_after": e.f_after} for p, e in estimates.items()}}


def smoke(bench: Bench) -> dict:
    from harness.bench.smoke import smoke_run

    work = bench.workdir / "smoke"
    work.mkdir()
    row = smoke_run(work)
    return {"figures": {"smoke_seconds": figure(row["seconds"], "s", f"{row['command']}, end to end, own process")}}
