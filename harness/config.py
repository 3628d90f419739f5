"""Typed configuration: defaults live here, YAML files and `key=value` overrides change them.

Unknown keys and values of the wrong type fail with one line naming the key and the nearest valid
names. Presets are YAML files in ``configs/``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from harness.errors import HarnessError
from harness.registry import nearest

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class EvalConfig:
    """`harness eval`: greedy two-agent dialogues on a task split."""

    task: str = "cbt"
    model: str = "smollm2-135m"
    split: str = "test"
    limit: int | None = None  # first N questions of the split
    seed: int = 0
    data_dir: str | None = None  # else $HARNESS_DATA_DIR, else the hub (online) or the fixtures
    online: bool = False  # allow the Hugging Face hub
    out: str | None = None  # run directory; default runs/eval/<run id>
    backend: str = "hf"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32  # dialogues per forward pass
    kv_cache: bool = True  # keep each agent's keys/values across turns
    max_turns: int = 10  # utterances per dialogue (Optima: 10)
    max_new_tokens: int = 128  # utterance token cap (Optima: 2000; sized for CPU); the reward's length override
    temperature: float = 0.0  # evaluation is greedy
    context_mode: str = "paragraph"  # or first_sentence, the reference's HotpotQA contexts
    metric: str | None = None  # default: the task's metric


def _coerce(cls, key: str, value, source: str):
    """`value` converted to the declared type of field `key` (strings come from the command line)."""
    hint = typing.get_type_hints(cls)[key]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(t for t in typing.get_args(hint) if t is not type(None)) if optional else hint
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    try:
        if base is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if base is bool and not isinstance(value, bool):
            raise ValueError
        if base is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{source}: {key} must be {base.__name__}, got {value!r}") from None


def build(cls, file: str | None = None, overrides: list[str] | dict | None = None, **flags):
    """A config of type `cls` from defaults, then a YAML file, then flags, then overrides."""
    names = [f.name for f in fields(cls)]
    values: dict = {}

    def put(key, value, source):
        if key not in names:
            raise HarnessError(f"{source}: unknown config key {key!r}; {nearest(key, names)}")
        values[key] = _coerce(cls, key, value, source)

    if file:
        path = Path(file)
        if not path.is_file() and (CONFIGS / f"{file}.yaml").is_file():
            path = CONFIGS / f"{file}.yaml"
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise HarnessError(f"{file}: config file not found") from None
        except yaml.YAMLError as e:
            raise HarnessError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise HarnessError(f"{path}: expected a mapping of config keys")
        for key, value in data.items():
            put(key, value, str(path))
    for key, value in flags.items():
        if value is not None:
            put(key, value, f"--{key.replace('_', '-')}")
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            put(key, value, "override")
        return cls(**values)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"override {item!r}: expected key=value")
        put(key, value, "override")
    return cls(**values)


def as_dict(config) -> dict:
    return dataclasses.asdict(config)


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIGS.glob("*.yaml"))}
