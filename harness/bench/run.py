"""`harness bench`: the parts chosen, run one after another on one machine and one model, each part's
failure recorded in its place, and the document written."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness import machine, runs
from harness.bench.sizes import Sizes, sizes_for
from harness.bench.subject import Subject
from harness.errors import HarnessError
from harness.registry import Registry, nearest

log = logging.getLogger(__name__)

# In the order they run: decode reads the limits part's figures.
PARTS: Registry = Registry("bench part")
for _name in ("limits", "decode", "dialogues", "search", "influence", "smoke"):
    PARTS.register(_name, f"harness.bench.parts:{_name}")


@dataclass
class Bench:
    """What every part reads: the model, the device, the sizes, the task, a working folder, and the
    results of the parts before it."""

    subject: Subject
    device: str
    dtype: str
    sizes: Sizes
    task: str
    data_dir: str | None
    seed: int
    workdir: Path
    results: dict = field(default_factory=dict)


def chosen_parts(only: list[str] | None, skip: list[str] | None) -> list[str]:
    """The parts to run, in their order; unknown names refused with the nearest valid ones."""
    names = PARTS.names()
    for name in (only or []) + (skip or []):
        if name not in names:
            raise HarnessError(f"unknown bench part {name!r}; {nearest(name, names)}")
    return [n for n in names if (not only or n in only) and n not in (skip or [])]


def run_bench(model: str, device: str, dtype: str, parts: list[str], quick: bool = False, random_init: bool = False,
              tokenizer: str | None = None, task: str = "hotpotqa", data_dir: str | None = None, seed: int = 0,
              progress=print, written=lambda document: None) -> dict:
    """The document of the run: the machine, versions, model, sizes, and each part's figures. After
    each part, `written(document so far)`: a run stopped at a time limit keeps the parts it finished."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {device}: torch sees no CUDA device on this machine")
    sizes_name, sizes = sizes_for(quick, device)
    info = machine.device_info(device)
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        subject = Subject(model, device, dtype, Path(tmp), random_init, tokenizer, seed)
        bench = Bench(subject, device, dtype, sizes, task, data_dir, seed, Path(tmp))
        document = {"bench_version": 1, "command": list(sys.argv), "git": runs.git_sha(),
                    "machine": info | {"name": machine.name(info)}, "versions": runs.versions(),
                    "model": subject.facts(), "task": task, "data_dir": data_dir, "seed": seed,
                    "sizes": {"name": sizes_name} | dataclasses.asdict(sizes), "parts": bench.results}
        for name in parts:
            progress(f"bench: {name} ...")
            started = time.perf_counter()
            try:
                result = PARTS.get(name)(bench)
            except (HarnessError, RuntimeError, OSError, ValueError) as e:
                # One part's failure (a task too small, an out-of-memory) leaves the others' figures.
                log.debug("bench part %s failed", name, exc_info=True)
                result = {"error": f"{type(e).__name__}: {e}"}
            result["seconds"] = time.perf_counter() - started
            bench.results[name] = result
            document["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            written(document)
            progress(f"bench: {name} {result['seconds']:.1f} s" + (f": {result['error']}" if "error" in result else ""))
        return document
