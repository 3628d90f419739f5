"""`run_spec.json` of every kind of record, from one builder: what ran, with which config, code and
machine. Each carries `schema_version`; records without one were written by commit a80c8ba or
before: reports read them, `--resume` refuses them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.records import schemas

FILE = "run_spec.json"
SCHEMA_VERSION = 1
# Config keys that change how a run computes, never what (the response cache, where the servers
# are, how training is launched): recorded, but no part of a run's identity (its shared-stage key, the config a resume must
# match, what reports compare). A served model's identity is in the records' `model` instead.
EXECUTION_KEYS = ("cache", "server", "train")


def execution_key(key: str) -> bool:
    """Whether a config key, or a nested one as `server.base_urls`, is an execution setting."""
    return key.split(".", 1)[0] in EXECUTION_KEYS


def run_spec(kind: str, run_id: str, config: dict, seed: int | None, device: dict | None = None, **facts) -> dict:
    """The record of one run, selection, evaluation or synthesis: its id, kind, config and seed, the
    facts of its kind (`run_spec.schema.json` says which), the package versions, the git commit and
    the command line; `device`: the machine it ran on (`harness.machine.device_info`). Refused (one
    line) where it breaks the schema."""
    spec = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "kind": kind, "config": config, "seed": seed,
            **facts, "versions": runs.versions(), "git_sha": runs.git_sha(), "command": list(sys.argv)}
    if device is not None:
        spec["device"] = device
    spec = json.loads(json.dumps(spec, default=str))  # as it will read back: tuples as lists, paths as text
    schemas.check(spec, "run_spec", f"{kind} {FILE}")
    return spec


def versioned(spec: dict) -> bool:
    """Whether a record describes itself (written after commit a80c8ba)."""
    return "schema_version" in spec


def read_resumable(path: Path) -> dict:
    """The run spec at `path`, refused in one line unless this harness can resume it: valid JSON, of
    this schema version, holding its schema."""
    path = Path(path)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"{path}: not a readable run record ({e}); it is not resumed: start the run in "
                           "another directory (--out)") from None
    if not isinstance(recorded, dict) or not versioned(recorded):
        raise HarnessError(f"{path.parent}: written by an older harness (no schema_version in {path.name}): "
                           "reports read it, but it is not resumed; start the run in another directory (--out)")
    if recorded["schema_version"] != SCHEMA_VERSION:
        raise HarnessError(f"{path}: schema_version {recorded['schema_version']!r}, and this harness resumes "
                           f"version {SCHEMA_VERSION} only; start the run in another directory (--out)")
    schemas.check(recorded, "run_spec", path)
    return recorded


def relocate(spec: dict, run_dir: Path, recorded: str) -> Path:
    """A path a run recorded, under the suite directory where the run is now (a published or copied
    suite keeps its layout, not its absolute paths)."""
    root = Path(spec["shared_stages"]).parent.parent
    if not Path(recorded).is_relative_to(root):
        raise HarnessError(f"{Path(run_dir) / FILE}: names {recorded!r}, outside its suite folder {root}")
    return runs.inside(Path(run_dir).parent, Path(recorded).relative_to(root))
