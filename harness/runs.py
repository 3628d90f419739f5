"""Run ids, run directories and atomic writes.

A run directory (or a data file) is written under a temporary name and renamed into place when
complete, so a directory that exists under its final name is always finished. Long runs write into a
fixed ``.<name>.partial`` directory as they go, which `--resume` continues. Run ids are canonical HELM-style
strings, ``eval:task=cbt,model=smollm2-135m,split=test,seed=0``, that double as directory names.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

PACKAGES = ("dits-harness", "torch", "transformers", "trl", "peft", "datasets", "lm_eval", "tokenizers")


def run_id(kind: str, **fields) -> str:
    return kind + ":" + ",".join(f"{k}={v}" for k, v in fields.items() if v is not None)


def dir_name(rid: str) -> str:
    """Run ids keep their canonical form on disk; only path separators are replaced."""
    return rid.replace("/", "_").replace(os.sep, "_")


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_file(final: Path):
    """Yield a temporary path beside `final`; on success it replaces `final`, on failure it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name[:40]}.partial-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def run_directory(final: Path):
    """Yield a temporary directory; on success it replaces `final`, on failure it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name[:40]}.partial-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def resumable_directory(final: Path, resume: bool):
    """Yield the partial directory of a long run; on success it replaces `final`. On failure it
    stays, so `resume=True` continues from what it holds; without it, a stale one is cleared."""
    partial = final.parent / f".{final.name}.partial"
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    yield partial
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


def append_jsonl(path: Path, rows) -> None:
    """Append whole lines and flush them to disk: what a killed run leaves is complete up to a line."""
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_complete_jsonl(path: Path) -> list[dict]:
    """The complete lines of a file another run was appending to (a cut last line is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
