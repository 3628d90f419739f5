"""A finished stage's manifest: every file in its directory with its size and sha256, written after
them. A stage is finished only when its manifest is there and every file still matches it: a crash
before the manifest, or a file cut or changed afterwards, leaves a stage the executor redoes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.records import schemas

FILE = "manifest.json"
SCHEMA_VERSION = 1
_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    found = []
    for folder, _, names in os.walk(directory):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                found.append(path.relative_to(directory).as_posix())
    return sorted(f for f in found if f != FILE)


def write(directory: Path) -> dict:
    """The manifest of everything now in `directory`, written last (atomically and durably)."""
    doc = {"schema_version": SCHEMA_VERSION,
           "files": {rel: {"size": (directory / rel).stat().st_size, "sha256": sha256(directory / rel)}
                     for rel in _files(directory)}}
    runs.write_json(directory / FILE, doc)
    return doc


def problems(directory: Path, hashes: bool = True) -> list[str]:
    """Why `directory` is not a finished stage, one line each (empty when it is): no directory, no
    or a broken manifest, a listed file missing, cut or (`hashes`) changed."""
    directory = Path(directory)
    if not directory.is_dir():
        return ["not written"]
    path = directory / FILE
    if not path.is_file():
        return [f"no {FILE}: it stopped before it finished"]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{FILE} is not valid JSON ({e})"]
    broken = schemas.problems(doc, "manifest", FILE)
    if broken:
        return broken
    out = []
    for rel, want in doc["files"].items():
        try:
            file = runs.inside(directory, rel)
        except HarnessError as e:
            out.append(str(e))
            continue
        if not file.is_file():
            out.append(f"{rel} is missing")
        elif file.stat().st_size != want["size"]:
            out.append(f"{rel} has {file.stat().st_size} bytes, its manifest says {want['size']}")
        elif hashes and sha256(file) != want["sha256"]:
            out.append(f"{rel} changed since it was written (sha256)")
    return out


def problem(directory: Path, hashes: bool = True) -> str | None:
    """The first reason `directory` is not a finished stage, or None when it is."""
    found = problems(directory, hashes)
    return found[0] if found else None
