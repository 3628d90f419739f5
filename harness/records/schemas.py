"""The JSON schemas of the run records, checked with jsonschema; a record that fails is one line
naming the file and the key."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema

from harness.errors import HarnessError

HERE = Path(__file__).parent


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((HERE / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def problems(doc, name: str, where) -> list[str]:
    """One line per way `doc` breaks the `name` schema (empty when it holds), each naming `where`
    and the key."""
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{where}: {'/'.join(str(k) for k in e.absolute_path) or '(top)'}: {e.message}" for e in errors]


def check(doc, name: str, where) -> None:
    """Refuses `doc` unless it holds the `name` schema (the first problem, one line)."""
    found = problems(doc, name, where)
    if found:
        raise HarnessError(f"{found[0]} (schema {name}.schema.json)")
