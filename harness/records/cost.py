"""The uniform cost record of a finished stage, `stage_cost.json`: its stage, wall seconds and
device, and the work it recorded (tokens, requests, rollouts, steps, pairs, influence units).

Each stage records its work in its own files (an evaluation in `cost.json`, training in
`stats.json`, a selection in its `run_spec.json`); the executor reads it from there once, when the
stage ends, and writes this record beside them, so reports read one file of one schema. Records
written by commit a80c8ba and before have no `stage_cost.json`: `work` reads the same numbers from
the same files for them (`harness.report.legacy`). (The stages' own `cost.json` files keep their
name and contents, which is why this one is `stage_cost.json`.)
"""

from __future__ import annotations

from pathlib import Path

from harness import config as cfgmod
from harness import runs
from harness.records import schemas

FILE = "stage_cost.json"
SCHEMA_VERSION = 1
# Where each stage records its work: (file in the stage directory, key in it or None for the top).
SOURCES = {"eval": ("cost.json", None), "eval_sft": ("cost.json", None), "sft_data": ("stats.json", "cost"),
           "sft": ("stats.json", None), "probe": ("probe.json", "cost"), "mcts": ("cost.json", "search"),
           "select": ("run_spec.json", None), "dpo": ("stats.json", None)}


def work(name: str, path: Path) -> dict:
    """The numbers stage `name` recorded in `path` about its work (tokens, requests, rollouts,
    steps, pairs, units), read from its own files."""
    file, key = SOURCES[name]
    record = runs.read_json(path / file)
    if name == "select":
        facts = record.get("selector_facts", {})
        units = len(facts.get("units", []))
        found = {"candidates": record["candidates"], "selected": record["selected"], "influence_units": units}
        if units:
            found |= {"warmup_steps": cfgmod.recorded("select", record["config"])["influence"]["warmup_steps"],
                      "validation_dialogues": facts["validation_dialogues"],
                      "influence_seconds": sum(facts["seconds"].values()),
                      "reused_estimate": facts["reused_estimate"]}
            found |= {k: v for k, v in facts.get("usage", {}).items() if k.endswith("tokens")}
        return found
    record = record[key] if key else record
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def record(stage: str, name: str, path: Path, device: str, wall_seconds: float) -> dict:
    """The cost record of finished stage `stage` (of kind `name`) in `path`."""
    doc = {"schema_version": SCHEMA_VERSION, "stage": stage, "name": name, "device": device,
           "wall_seconds": wall_seconds, "work": work(name, path)}
    schemas.check(doc, "stage_cost", path / FILE)
    return doc


def read(path: Path) -> dict | None:
    """The cost record in stage directory `path`, or None where the stage has none (older records)."""
    file = path / FILE
    if not file.is_file():
        return None
    doc = runs.read_json(file)
    schemas.check(doc, "stage_cost", file)
    return doc


def spent(before: dict, after: dict) -> dict:
    """What a backend's usage counters (`Usage.as_dict`) grew by."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def summed(costs: list[dict]) -> dict:
    """Cost or usage counters added key by key (nested ones too); a key some lack counts 0 there (a
    resumed stage's batches may have run with the response cache on and off)."""
    keys = dict.fromkeys(k for c in costs for k in c)
    return {k: summed([c[k] for c in costs if isinstance(c.get(k), dict)])
            if any(isinstance(c.get(k), dict) for c in costs) else sum(c.get(k) or 0 for c in costs) for k in keys}
