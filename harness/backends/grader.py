"""A model asked to grade things: one greedy one-message request per item, behind any backend, its
replies cached.

MAPPA's coach (`harness.credit.coach`) and the evaluation's judge (`harness.judge`) are both graders:
they differ in their prompt and in how a reply is read, not in how they are asked. A reply is cached
by a key over the grader's kind, its model's identity (as the response cache keys it) and its backend,
its prompt's version hash, the request and its reply cap, in the response cache's SQLite store
(`harness.backends.response_cache.ResponseCache`: WAL, a busy timeout, INSERT OR IGNORE, so several
processes share it). A rerun asks only for what it has not seen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.backends import make_backend
from harness.backends.base import Backend, Request, Sampling
from harness.backends.response_cache import ResponseCache, entry_key, model_identity
from harness.cache import cache_root


class Grader:
    """A grading model behind a backend, with its reply cache and what it spent."""

    def __init__(self, kind: str, backend: Backend, cache: ResponseCache, engine: str, prompt_hash: str,
                 max_new_tokens: int):
        self.kind, self.backend, self.cache, self.prompt_hash = kind, backend, cache, prompt_hash
        self.max_new_tokens = max_new_tokens
        self.identity = model_identity(backend.model_info) | {"backend": engine}
        self.spent = {"items": 0, "calls": 0, "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0}

    @classmethod
    def build(cls, kind: str, cfg, model: str, engine: str | None, prompt_hash: str, max_new_tokens: int) -> "Grader":
        """The grader `model` on `engine` (default the section's backend) with the section's engine
        settings; never through the response cache's backend wrapper, since replies are cached here:
        in the section's `cache` directory when it has one, else in `$HARNESS_CACHE/<kind>`."""
        engine = engine or cfg.backend
        if engine == "hf":
            from harness import models

            models.check(model)
        backend = make_backend(dataclasses.replace(cfg, backend=engine, cache=None), model=model)
        cache = ResponseCache(Path(cfg.cache) if cfg.cache else cache_root() / kind)
        return cls(kind, backend, cache, engine, prompt_hash, max_new_tokens)

    def info(self) -> dict:
        """What a record says of the grader's model and request."""
        return {"model": self.backend.model_info, "backend": self.identity["backend"],
                "prompt_sha256": self.prompt_hash, "max_new_tokens": self.max_new_tokens}

    def key(self, messages: list[dict]) -> str:
        return entry_key(self.kind, self.identity, {"prompt": self.prompt_hash, "messages": messages,
                                                    "max_new_tokens": self.max_new_tokens})

    def replies(self, messages: list[list[dict]]) -> list[str]:
        """One reply per request: cached ones read, the others in one greedy generate call."""
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
        self.spent["items"] += len(messages)
        self.spent["cache_hits"] += len(messages) - len(misses)
        return [v["reply"] for v in stored]
