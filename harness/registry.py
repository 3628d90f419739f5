"""One registry type for every pluggable axis (tasks, metrics, backends, models, selectors).

Entries are registered with a decorator or as a lazy ``"module:attr"`` string that is imported on
first use, so listing names never imports heavy modules. Unknown names fail with the nearest valid
names, the way lm-eval's registry does.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


def import_target(spec: str):
    """The object named by ``"package.module:attr"``."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def nearest(name: str, choices: list[str]) -> str:
    """`did you mean` text for an unknown name, or all valid names when none is close."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    shown = close or sorted(choices)
    return ("did you mean: " if close else "valid: ") + ", ".join(shown)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T] | None:
        """`register("x", obj)`, `register("x", "pkg.mod:attr")` (lazy), or `@register("x")`."""
        if target is not None:
            self._add(name, target)
            return None

        def decorate(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorate

    def _add(self, name: str, target: T | str) -> None:
        if name in self._entries and not isinstance(self._entries[name], str):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise HarnessError(f"unknown {self.kind} {name!r}; {nearest(name, self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_target(entry)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
