"""A response cache for any backend (lm-eval's `--use_cache`): a rerun decodes only what it has not seen.

`CachedBackend` wraps a backend and keeps what its `generate`, `loglikelihood` and `turn_nll` return
in a `ResponseCache`, one SQLite file a cache directory, by a key over everything that decides the
answer: the kind of call, the model's identity, the request's full content and the sampling
parameters, and for a sampled request (temperature > 0) its own sample seed, so k samples of one
prompt are k entries. A greedy request is keyed without its seed; `Request.cache_key` (where an
engine keeps a conversation's keys/values) is never part of a key, `Request.adapter` always is.

A result with the cache on is the result with it off, also when only some requests hit: each
request gets the seed it would have had (`Backend.sample_seeds`) and the misses go to the engine in
one call with those seeds, so each completion is what the engine's batch invariance makes it
whatever the batch (`Backend.generate`). `turn_nll` is one entry a call, not a text: a text's NLL
depends at float level on the padded batch it was scored in (`harness.synth.synthesis.Search.grow`).

The model's identity is what `model_info` says: an in-process model's weights hash; a served
model's endpoint, the id its server reports and the revision the user declares. A server that swaps
the weights behind one name and revision cannot be told apart: clear or move the cache then.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from harness.backends.base import Backend, Choice, Completion, Request, Sampling
from harness.errors import HarnessError

FILE = "responses.sqlite"
# The model_info keys that say which model answers (those a backend has).
IDENTITY_KEYS = ("name", "sha256", "precision", "base_url", "model_id", "revision", "flavour")
# Counted in Usage.extra: one a request, a choice or a turn_nll call.
HITS, MISSES = "response_cache_hits", "response_cache_misses"


def model_identity(model_info: dict) -> dict:
    return {k: model_info[k] for k in IDENTITY_KEYS if k in model_info}


def entry_key(kind: str, model: dict, content: dict) -> str:
    """sha256 of the canonical JSON of what decides an entry."""
    text = json.dumps([kind, model, content], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def request_key(model: dict, request: Request, sampling: Sampling, seed: int) -> str:
    return entry_key("generate", model, {"messages": request.messages, "adapter": request.adapter,
                                         "sampling": dataclasses.asdict(sampling),
                                         "seed": seed if sampling.temperature > 0 else None})


def choice_key(model: dict, choice: Choice) -> str:
    return entry_key("loglikelihood", model, {"messages": choice.messages, "continuations": choice.continuations,
                                              "prefix": choice.prefix, "adapter": choice.adapter})


class ResponseCache:
    """JSON values by key in `DIR/responses.sqlite`. Several processes may use one cache at once: WAL
    lets them read while one writes, the busy timeout makes a writer wait for another, and each
    write is one short transaction of INSERT OR IGNORE (two processes may compute the same entry:
    equal keys hold equal values, and the first stays)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / FILE
        with self._failing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            for attempt in range(300):  # switching to WAL takes no busy timeout: two first opens may collide
                try:
                    self.db.execute("PRAGMA journal_mode=WAL")
                    with self.db:
                        self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 299:
                        raise
                    time.sleep(0.1)

    @contextmanager
    def _failing(self):
        try:
            yield
        except (OSError, sqlite3.Error) as e:
            raise HarnessError(f"{self.path}: the response cache failed ({e})") from None

    def get(self, keys: list[str]) -> list:
        """Each key's value, None where the cache has none."""
        with self._failing():
            rows = [self.db.execute("SELECT value FROM responses WHERE key = ?", (k,)).fetchone() for k in keys]
        return [None if row is None else json.loads(row[0]) for row in rows]

    def put(self, values: dict[str, object]) -> None:
        with self._failing(), self.db:
            self.db.executemany("INSERT OR IGNORE INTO responses (key, value) VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])


class CachedBackend(Backend):
    """`inner` answering through `cache`. Its identity, tokenizer and batch size are the inner
    backend's, and so is its usage ledger (the cache's hits and misses go to `usage.extra`), so cost
    records stay whole. `engine`: settings that change the numbers besides the weights (the
    backend, its device and dtype), part of every key."""

    def __init__(self, inner: Backend, cache: ResponseCache, engine: dict | None = None):
        super().__init__(inner.model_info, inner.tokenizer, inner.batch_size)
        self.inner, self.cache = inner, cache
        self.usage = inner.usage
        self.usage.extra.setdefault(HITS, 0)
        self.usage.extra.setdefault(MISSES, 0)
        self.identity = model_identity(inner.model_info) | (engine or {})

    def generate(self, requests: list[Request], sampling: Sampling, seed: int = 0) -> list[Completion]:
        seeds = self.sample_seeds(requests, seed)

        def decode(misses: list[int]) -> list[Completion]:  # each with the seed it has in the whole call
            return self.inner.generate([dataclasses.replace(requests[i], seed=seeds[i]) for i in misses],
                                       sampling, seed)

        keys = [request_key(self.identity, r, sampling, s) for r, s in zip(requests, seeds)]
        return self._through(keys, decode, dataclasses.asdict,
                             lambda v: Completion(**(v | {"token_ids": tuple(v["token_ids"])})))

    def loglikelihood(self, choices: list[Choice]) -> list[list[tuple[float, int]]]:
        keys = [choice_key(self.identity, c) for c in choices]
        return self._through(keys, lambda misses: self.inner.loglikelihood([choices[i] for i in misses]),
                             list, lambda v: [tuple(pair) for pair in v])

    def turn_nll(self, texts: list[str]) -> list[float]:
        key = entry_key("turn_nll", self.identity, {"texts": texts})
        return self._through([key], lambda _: [self.inner.turn_nll(texts)], list, list)[0]

    def release(self, cache_key_prefix: str) -> None:
        self.inner.release(cache_key_prefix)

    def _through(self, keys: list[str], compute: Callable[[list[int]], list], store: Callable, load: Callable) -> list:
        """Each key's value: from the cache, or for the misses from one `compute(miss indices)`
        call, stored as `store` makes them (`load` makes them back)."""
        out = [None if v is None else load(v) for v in self.cache.get(keys)]
        misses = [i for i, v in enumerate(out) if v is None]
        if misses:
            computed = compute(misses)
            self.cache.put({keys[i]: store(v) for i, v in zip(misses, computed)})
            for i, v in zip(misses, computed):
                out[i] = v
        self.usage.extra[HITS] += len(keys) - len(misses)
        self.usage.extra[MISSES] += len(misses)
        return out
