"""Decoding throughput at batch 1 and batched, as fractions of the machine's limits.

Greedy decoding on the raw model with a key/value cache: a random prompt of `prompt_tokens` ids a
row is encoded (untimed), then `steps` steps each feed every row its last token. The two batch sizes
alternate round by round (the machine's speed drifts) and each keeps its best round.

The two fractions, with P the parameters of the weights a step multiplies by and W their bytes
(`subject.matmul_weights`):

    compute fraction   = 2 P x tokens/s / matmul peak (FLOP/s)
    bandwidth fraction = W x steps/s / memory bandwidth (bytes/s)

A token costs 2 P FLOPs (a multiply and an add per weight). A step reads the weights once, whatever
the batch: at batch 1 a step makes one token, batched it makes B tokens for the same weight bytes,
so batching raises the compute fraction B-fold at the same step rate while the bandwidth fraction
stays that of the step rate. Attention over the cache (FLOPs and bytes that grow with the context)
is counted in neither, so both fractions are lower bounds of the work done.
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache


def flop_fraction(matmul_params: int, tokens_per_second: float, peak_flops: float) -> float:
    return 2 * matmul_params * tokens_per_second / peak_flops


def bandwidth_fraction(weight_bytes: int, steps_per_second: float, bandwidth: float) -> float:
    return weight_bytes * steps_per_second / bandwidth


def decode_seconds(model: torch.nn.Module, batch: int, prompt_tokens: int, steps: int, seed: int = 0) -> float:
    """Wall seconds of `steps` greedy decoding steps of `batch` rows after an untimed prompt."""
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = torch.randint(model.config.vocab_size, (batch, prompt_tokens), device=device, generator=generator)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        out = model(input_ids=ids, cache=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        started = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, cache=out.cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        return time.perf_counter() - started


def decode_rates(model: torch.nn.Module, batches: tuple[int, ...], prompt_tokens: int, steps: int,
                 rounds: int) -> dict[int, float]:
    """Steps per second for each batch size: the best of `rounds` alternating rounds, after one
    untimed warm-up of each (kernels chosen, memory allocated)."""
    for batch in batches:
        decode_seconds(model, batch, prompt_tokens, 2)
    best = dict.fromkeys(batches, float("inf"))
    for r in range(rounds):
        for batch in batches:
            best[batch] = min(best[batch], decode_seconds(model, batch, prompt_tokens, steps, seed=r))
    return {batch: steps / seconds for batch, seconds in best.items()}
