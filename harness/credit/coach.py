"""The coach: one greedy request per action to any backend, its reply parsed to a score in [0, 10].

Replies are cached as every grader's (`harness.backends.grader`: by the coach's identity, the
prompt's version hash, the message and the reply cap), in the run's `cache` directory when it has
one, else in `$HARNESS_CACHE/coach`. A rerun, or a selection after a search that scored the same
actions, calls the coach only for what it has not seen.

The reply's `PROCESS_SCORE: x` is read, x clamped to [0, 10] (MAPPA's parser); a reply without one
counts as unparsed and takes MAPPA's neutral fallback, 5. MAPPA asks again with a format correction
first; here each action is one call, and the parse rate is reported instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.backends.base import Backend
from harness.backends.grader import Grader
from harness.backends.response_cache import ResponseCache
from harness.credit import prompt
from harness.errors import HarnessError
from harness.registry import Registry

SCORE = re.compile(r"PROCESS_SCORE\s*:\s*\[?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
FALLBACK = 5.0  # MAPPA's neutral score for a reply it cannot read

# The credit signals `credit=` names; MAPPA's coach is the one there is.
CREDITS: Registry[str] = Registry("credit")
CREDITS.register("mappa", "harness.credit.coach:Coach")


@dataclass(frozen=True)
class Action:
    """One agent's action as the coach sees it: the agent's memory before it acted and what it said."""

    agent: str
    role: str
    memory: list[dict]
    said: str
    gold: str | None = None  # shown only with coach_sees_gold


@dataclass(frozen=True)
class Score:
    score: float  # in [0, 10]; FALLBACK where the reply could not be read
    parsed: bool
    reply: str


def parse(reply: str) -> float | None:
    found = SCORE.search(reply)
    return None if found is None else max(0.0, min(10.0, float(found.group(1))))


class Coach:
    """A coach model behind any backend (a `harness.backends.grader.Grader`), with what it spent."""

    def __init__(self, backend: Backend, cache: ResponseCache, engine: str, sees_gold: bool = False,
                 max_new_tokens: int = 64):
        self.grader = Grader("coach", backend, cache, engine, prompt.prompt_hash(), max_new_tokens)
        self.sees_gold, self.parsed = sees_gold, 0

    @classmethod
    def build(cls, cfg) -> "Coach":
        """The coach a section's `coach*` keys name, on `coach_backend` (default the section's own)."""
        if not cfg.coach:
            raise HarnessError("credit=mappa and --selector mappa need a coach model: set coach=MODEL (--coach)")
        grader = Grader.build("coach", cfg, cfg.coach, cfg.coach_backend, prompt.prompt_hash(),
                              cfg.coach_max_new_tokens)
        return cls(grader.backend, grader.cache, grader.identity["backend"], cfg.coach_sees_gold,
                   cfg.coach_max_new_tokens)

    @property
    def spent(self) -> dict:
        g = self.grader.spent
        return {"actions": g["items"], **{k: v for k, v in g.items() if k != "items"}, "parsed": self.parsed}

    def info(self) -> dict:
        """What a run record says of the coach."""
        return self.grader.info() | {"prompt_version": prompt.VERSION, "sees_gold": self.sees_gold}

    def messages(self, action: Action) -> list[dict]:
        """The coach's request for an action: one user message, the gold in it only if the coach may see it."""
        return [{"role": "user", "content": prompt.coach_message(
            action.agent, action.role, action.memory, action.said, action.gold if self.sees_gold else None)}]

    def score(self, actions: list[Action]) -> list[Score]:
        """One score per action, each from one request (cached, or asked in one generate call)."""
        out = []
        for reply in self.grader.replies([self.messages(a) for a in actions]):
            found = parse(reply)
            out.append(Score(FALLBACK if found is None else found, found is not None, reply))
        self.parsed += sum(s.parsed for s in out)
        return out
