"""The coach: one greedy request per action to any backend, its reply parsed to a score in [0, 10].

Scores are cached by a key over the coach's identity (its model's, as the response cache keys it,
and its backend), the prompt's version hash, the coach's message and its reply cap, in the response
cache's SQLite store (`harness.backends.response_cache.ResponseCache`: WAL, a busy timeout, INSERT
OR IGNORE, so several processes share it): in the run's `cache` directory when it has one, else in
`$HARNESS_CACHE/coach`. A rerun, or a selection after a search that scored the same actions, calls
the coach only for what it has not seen.

The reply's `PROCESS_SCORE: x` is read, x clamped to [0, 10] (MAPPA's parser); a reply without one
counts as unparsed and takes MAPPA's neutral fallback, 5. MAPPA asks again with a format correction
first; here each action is one call, and the parse rate is reported instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from harness.backends import make_backend
from harness.backends.base import Backend, Request, Sampling
from harness.backends.response_cache import ResponseCache, entry_key, model_identity
from harness.cache import cache_root
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
    """A coach model behind any backend, with its score cache and what it spent."""

    def __init__(self, backend: Backend, cache: ResponseCache, engine: str, sees_gold: bool = False,
                 max_new_tokens: int = 64):
        self.backend, self.cache, self.sees_gold, self.max_new_tokens = backend, cache, sees_gold, max_new_tokens
        self.identity = model_identity(backend.model_info) | {"backend": engine}
        self.spent = {"actions": 0, "calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0,
                      "parsed": 0}

    @classmethod
    def build(cls, cfg) -> "Coach":
        """The coach a section's `coach*` keys name, on `coach_backend` (default the section's own) with the
        section's engine settings; never through the response cache's backend wrapper, since scores are
        cached here."""
        if not cfg.coach:
            raise HarnessError("credit=mappa and --selector mappa need a coach model: set coach=MODEL (--coach)")
        engine = cfg.coach_backend or cfg.backend
        if engine == "hf":
            from harness import models

            models.check(cfg.coach)
        backend = make_backend(dataclasses.replace(cfg, backend=engine, cache=None), model=cfg.coach)
        return cls(backend, ResponseCache(Path(cfg.cache) if cfg.cache else cache_root() / "coach"), engine,
                   cfg.coach_sees_gold, cfg.coach_max_new_tokens)

    def info(self) -> dict:
        """What a run record says of the coach."""
        return {"model": self.backend.model_info, "backend": self.identity["backend"],
                "prompt_version": prompt.VERSION, "prompt_sha256": prompt.prompt_hash(),
                "sees_gold": self.sees_gold, "max_new_tokens": self.max_new_tokens}

    def messages(self, action: Action) -> list[dict]:
        """The coach's request for an action: one user message, the gold in it only if the coach may see it."""
        return [{"role": "user", "content": prompt.coach_message(
            action.agent, action.role, action.memory, action.said, action.gold if self.sees_gold else None)}]

    def key(self, messages: list[dict]) -> str:
        """The cache key of a request: the coach's identity, the prompt's version hash, the request, the cap."""
        return entry_key("coach", self.identity, {"prompt": prompt.prompt_hash(), "messages": messages,
                                                  "max_new_tokens": self.max_new_tokens})

    def score(self, actions: list[Action]) -> list[Score]:
        """One score per action: cached ones read, the others one request each, in one generate call."""
        messages = [self.messages(a) for a in actions]
        keys = [self.key(m) for m in messages]
        stored = self.cache.get(keys)
        misses = [i for i, v in enumerate(stored) if v is None]
        if misses:
            before = self.backend.usage.as_dict()
            completions = self.backend.generate([Request(messages[i]) for i in misses],
                                                Sampling(max_new_tokens=self.max_new_tokens), seed=0)
            self.spent["calls"] += len(misses)
            self.spent["prompt_tokens"] += self.backend.usage.prompt_tokens - before["prompt_tokens"]
            self.spent["completion_tokens"] += self.backend.usage.completion_tokens - before["completion_tokens"]
            fresh = {keys[i]: {"reply": c.text} for i, c in zip(misses, completions)}
            self.cache.put(fresh)
            for i in misses:
                stored[i] = fresh[keys[i]]
        out = []
        for value in stored:
            found = parse(value["reply"])
            out.append(Score(FALLBACK if found is None else found, found is not None, value["reply"]))
        self.spent["actions"] += len(actions)
        self.spent["cache_hits"] += len(actions) - len(misses)
        self.spent["parsed"] += sum(s.parsed for s in out)
        return out
