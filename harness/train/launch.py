"""How a training stage runs (`train.launcher`): in this process, or under `accelerate launch` with
one process per device (trl's data-parallel training; DeepSpeed ZeRO-3 through an accelerate config
file: harness/presets/accelerate/). The stage's directory and records are the same either way: the
launched processes train into it and the main one writes the stats this process records.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from harness import runs
from harness.config import CONFIGS, RunConfig, as_dict
from harness.errors import HarnessError
from harness.train.trainers import processes, train_dpo, train_sft, write_training

TRAINERS = {"sft": train_sft, "dpo": train_dpo}
ACCELERATE_CONFIGS = CONFIGS / "accelerate"


def in_process(kind: str, base: str, rows: list[dict], cfg: RunConfig, out: Path, name: str,
               checkpoints: Path | None) -> dict:
    return TRAINERS[kind](base, rows, cfg, out, name, checkpoints)


def under_accelerate(kind: str, base: str, rows: list[dict], cfg: RunConfig, out: Path, name: str,
                     checkpoints: Path | None) -> dict:
    """The stage under `accelerate launch`: the job (config, rows, where to write) goes to a file
    each process reads (harness.train.worker); the main process writes the stats back."""
    job = out / "job"
    job.mkdir()
    runs.write_jsonl(job / "rows.jsonl", rows)
    runs.write_json(job / "job.json", {"kind": kind, "base": base, "config": as_dict(cfg), "out": str(out),
                                       "name": name, "checkpoints": str(checkpoints) if checkpoints else None})
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *launch_flags(cfg),
                             "-m", "harness.train.worker", str(job)], env=worker_env(cfg))
    if result.returncode:
        raise HarnessError(f"{kind.upper()} under accelerate launch failed (exit {result.returncode}); "
                           "the processes' errors are above")
    stats = json.loads((job / "stats.json").read_text())
    shutil.rmtree(job)
    return stats


LAUNCHERS = {"process": in_process, "accelerate": under_accelerate}


def train_stage(kind: str, base: str, rows: list[dict], cfg: RunConfig, out: Path) -> dict:
    """Train `kind` ("sft" or "dpo") of `base` on `rows` into the stage directory `out` (written whole
    or not at all: harness.train.trainers.write_training). With `train.checkpoint_steps`, trl's
    checkpoints live beside it until it completes, so a stage started again resumes from the last."""
    check(cfg, (kind,))
    checkpoints = out.parent / f".{out.name}.checkpoints" if cfg.train.checkpoint_steps else None
    launch = LAUNCHERS[cfg.train.launcher]
    stats = write_training(out, lambda tmp: launch(kind, base, rows, cfg, tmp, str(out / "model"), checkpoints))
    if checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return stats


def accelerate_config(cfg: RunConfig) -> Path | None:
    """The accelerate config file `train.accelerate_config` names: a path, or a file of
    harness/presets/accelerate/ by its stem."""
    name = cfg.train.accelerate_config
    if name is None:
        return None
    path = Path(name)
    if not path.is_file() and (ACCELERATE_CONFIGS / f"{name}.yaml").is_file():
        path = ACCELERATE_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(ACCELERATE_CONFIGS.glob("*.yaml")))
        raise HarnessError(f"train.accelerate_config: {name} is neither a file nor one of {known}")
    return path


def read_accelerate_config(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or "distributed_type" not in data:
        raise HarnessError(f"{path}: not an accelerate config (no distributed_type)")
    return data


def check(cfg: RunConfig, kinds: tuple[str, ...] = tuple(TRAINERS)) -> None:
    """The launch of the training stages `kinds` a config asks for, checked before any work
    (harness validate, make_plan)."""
    train = cfg.train
    if train.launcher not in LAUNCHERS:
        raise HarnessError(f"train.launcher must be one of {', '.join(LAUNCHERS)}, got {train.launcher!r}")
    if train.num_processes < 1 or train.checkpoint_steps < 0:
        raise HarnessError(f"train.num_processes must be at least 1 and train.checkpoint_steps at least 0, got "
                           f"{train.num_processes} and {train.checkpoint_steps}")
    if train.launcher == "process" and (train.num_processes != 1 or train.accelerate_config):
        raise HarnessError("train.num_processes and train.accelerate_config need train.launcher=accelerate")
    n = processes(cfg)
    for recipe in kinds:
        accum = getattr(cfg, recipe).grad_accum
        if accum % n:
            raise HarnessError(f"{recipe}.grad_accum {accum} cannot be split over train.num_processes {n}: the "
                               f"global batch is batch_size x grad_accum, so grad_accum must be a multiple of {n}")
    path = accelerate_config(cfg)
    if path:
        data = read_accelerate_config(path)
        if data.get("num_processes", n) != n:
            raise HarnessError(f"{path}: num_processes {data['num_processes']} but train.num_processes {n}")
        if data.get("distributed_type") == "DEEPSPEED" and cfg.device == "cpu":
            raise HarnessError(f"{path}: DeepSpeed needs device=cuda")


def launch_flags(cfg: RunConfig) -> list[str]:
    """`accelerate launch`'s flags: the config file if one is named, else data-parallel processes
    (torchrun's launcher; on CPU, trl's `use_cpu` makes them gloo processes)."""
    flags = ["--num_processes", str(processes(cfg)), "--main_process_port", str(free_port())]
    path = accelerate_config(cfg)
    if path:
        return ["--config_file", str(path), *flags]
    multi = ["--multi_gpu"] if processes(cfg) > 1 else []
    precision = "bf16" if cfg.device.startswith("cuda") and cfg.dtype == "bfloat16" else "no"
    return [*multi, "--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no", *flags]


def worker_env(cfg: RunConfig) -> dict:
    """On CPU the processes share the cores (torchrun would give each one thread); a user's
    OMP_NUM_THREADS wins."""
    env = dict(os.environ)
    if cfg.device == "cpu" and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes(cfg)))
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
