"""The machine's limits, measured in the run that compares against them: the matmul peak (FLOP/s)
and the memory bandwidth (bytes/s) of one device.

Both are the best of a few timed repetitions after a warm-up: the best is the closest a run comes
to the limit, and the machine's speed drifts (other work, clocks) between repetitions.
"""

from __future__ import annotations

import time
from typing import Callable

import torch


def best_seconds(work: Callable[[], object], device: str, reps: int, warmup: int = 2) -> float:
    """The fastest of `reps` timed calls of `work` after `warmup` untimed ones (on CUDA, each timed
    call waits for the device: kernels launch asynchronously)."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        work()
    sync()
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        work()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak(device: str, dtype: torch.dtype, size: int, reps: int = 5) -> float:
    """FLOP/s of `torch.mm` on two random `size` x `size` matrices: 2 size^3 FLOPs a product."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return 2 * size ** 3 / best_seconds(lambda: torch.mm(a, b, out=out), device, reps)


def memory_bandwidth(device: str, nbytes: int, reps: int = 5) -> float:
    """Bytes/s of copying one `nbytes` tensor into another: each copy reads `nbytes` and writes
    `nbytes`, so 2 nbytes count. The tensors must be far larger than the caches to measure memory."""
    src = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_seconds(lambda: dst.copy_(src), device, reps)
