"""One registry type for every pluggable axis (tasks, metrics, backends, models, selectors).

Entries are registered with a decorator or as a lazy ``"module:attr"`` string that is imported on
first use, so listing names never imports heavy modules. Unknown names fail with the nearest valid
names, the way lm-eval's registry does.

Other installed distributions add entries without editing the repository (as lm-eval's
``--include-path`` adds tasks) through an entry-point group, ``harness.tasks`` or
``harness.selectors`` for example (CONTRIBUTING.md). The group is read once, the first time a name
is missing or the names are listed; the harness's own entries win a clash.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, Iterator, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")
log = logging.getLogger(__name__)


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
    def __init__(self, kind: str, group: str | None = None):
        """`group`: the entry-point group other distributions register into; by default
        `harness.<kind>s`, lower case with spaces as underscores ("task": `harness.tasks`)."""
        self.kind = kind
        self.group = group or f"harness.{kind.lower().replace(' ', '_')}s"
        self._entries: dict[str, T | str | EntryPoint] = {}
        self._group_read = False

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
        if name in self._entries and not isinstance(self._entries[name], (str, EntryPoint)):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target

    def _read_group(self) -> None:
        """The entry points of `group`, once; a name the harness already has keeps its own entry."""
        if self._group_read:
            return
        self._group_read = True
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                log.warning("%s %r of %s (entry point %s) is ignored: the harness has its own", self.kind,
                            ep.name, _distribution(ep), ep.value)
            else:
                self._entries[ep.name] = ep

    def get(self, name: str) -> T:
        if name not in self:
            raise HarnessError(f"unknown {self.kind} {name!r}; {nearest(name, self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_target(entry)
        elif isinstance(entry, EntryPoint):
            entry = self._load(entry)
        self._entries[name] = entry
        return entry

    def _load(self, ep: EntryPoint) -> T:
        where = f"{self.kind} {ep.name!r} of {_distribution(ep)} (entry point {self.group}: {ep.value})"
        if not ep.attr:
            raise HarnessError(f"{where} names a module, not an object: write it as 'module:attr'")
        try:
            return ep.load()
        except (ImportError, AttributeError) as e:
            raise HarnessError(f"{where} could not be loaded: {e}") from e

    def names(self) -> list[str]:
        self._read_group()
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        if name not in self._entries:
            self._read_group()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _distribution(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "an unnamed distribution"
