"""The request plan of the server influence path (`influence.path=server`), as pure logic: no I/O.

The reference code loads one unit adapter at a time into vLLM under one reused name, which serialises
the validation and corrupts vLLM's prefix cache, whose cached blocks are keyed by the adapter's name
(vLLM issues #30931, #42125). Here each adapter gets a name of its own, the units are cut into batches
of at most `max_loras` (what the server holds and batches together), and each batch is loaded on
every server, has all its units' validation dialogues submitted together, and is unloaded.

The retry policy of the adapter endpoints (`outcome`) follows vLLM's answers (docs/vllm-adapters.md):
transport failures, 408, 429 and 5xx are retried; "already loaded" after a retried load is our own
earlier attempt landing; the other 4xx are fatal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError

LOAD, SUBMIT, UNLOAD = "load", "submit", "unload"  # a step's action
# What to do with an adapter request's answer: done; try again after the backoff; unload what a killed
# run left under this name, then load again; give up with the reason.
DONE, RETRY, RELOAD, FATAL = "done", "retry", "reload", "fatal"
THETA_STAR = "star"  # the label of theta*'s adapter (units are "u<index>")
RETRIED_STATUS = {408, 429}  # besides 5xx and transport failures, as the generation requests
# vLLM's messages (vllm/entrypoints/openai/models/serving.py)
ALREADY_LOADED = "has already been loaded"
NOT_LOADED = "cannot be found"
NO_ADAPTER_FILES = "No adapter found"
_NAME_PART = re.compile(r"[A-Za-z0-9]+")


def unit_label(index: int) -> str:
    """The label of the unit at `index` of the estimate's units."""
    return f"u{index}"


def adapter_name(key: str, label: str, digest: str) -> str:
    """The name an adapter is loaded under: the estimate's key, the unit's label and the digest of its
    weights. Two estimates never share a name, and a name never stands for other weights (a unit
    stepped again, e.g. at another eta, has another digest), so the server's prefix cache stays right;
    the same weights of the same estimate get the same name."""
    for what, part in (("estimate key", key), ("label", label), ("weights digest", digest)):
        if not _NAME_PART.fullmatch(part or ""):
            raise HarnessError(f"server influence: an adapter's {what} must be letters and digits, got {part!r}")
    return f"dits-{key}-{label}-{digest[:12]}"


def batches(units: Sequence[int], max_loras: int) -> list[list[int]]:
    """The units in order, cut into batches of at most `max_loras`."""
    if max_loras < 1:
        raise HarnessError(f"influence.max_loras must be at least 1, got {max_loras}")
    return [list(units[i:i + max_loras]) for i in range(0, len(units), max_loras)]


@dataclass(frozen=True)
class Adapter:
    label: str  # the unit's (`unit_label`) or THETA_STAR
    name: str  # what the server knows it as, and what each of its requests names (`Request.adapter`)
    path: str  # the directory its weights were written to, which the server reads


@dataclass(frozen=True)
class Step:
    action: str  # LOAD, SUBMIT or UNLOAD
    server: str | None = None  # the base URL a load or unload goes to
    adapter: Adapter | None = None


@dataclass(frozen=True)
class BatchPlan:
    """One batch: its adapters loaded on every server, then every adapter's validation dialogues
    submitted together (unit-major, `rows`), then its adapters unloaded."""

    adapters: tuple[Adapter, ...]
    servers: tuple[str, ...]
    questions: int  # validation questions: each adapter speaks in one dialogue on each

    def loads(self) -> list[Step]:
        return [Step(LOAD, server, a) for a in self.adapters for server in self.servers]

    def unloads(self) -> list[Step]:
        return [Step(UNLOAD, server, a) for a in self.adapters for server in self.servers]

    def steps(self) -> list[Step]:
        return [*self.loads(), Step(SUBMIT), *self.unloads()]

    def rows(self) -> list[tuple[Adapter, int]]:
        """The dialogues submitted together: (adapter, validation question index), unit-major."""
        return [(a, q) for a in self.adapters for q in range(self.questions)]

    def collate(self, results: Sequence) -> dict[str, list]:
        """Results in `rows` order back to their adapters' labels, each in question order."""
        if len(results) != len(self.adapters) * self.questions:
            raise ValueError(f"{len(results)} results for {len(self.adapters)} adapters x {self.questions} questions")
        n = self.questions
        return {a.label: list(results[i * n:(i + 1) * n]) for i, a in enumerate(self.adapters)}


def batch_plan(key: str, entries: Sequence[tuple[str, str, str]], servers: Sequence[str], questions: int) -> BatchPlan:
    """The plan of one batch from its (label, weights digest, path) entries."""
    labels = [label for label, _, _ in entries]
    if not entries or len(set(labels)) != len(labels):
        raise ValueError(f"a batch needs distinct labels, got {labels}")
    if not servers:
        raise HarnessError("server influence: no servers to load the adapters on (server.base_urls)")
    if questions < 1:
        raise ValueError(f"a batch needs validation questions, got {questions}")
    adapters = tuple(Adapter(label, adapter_name(key, label, digest), path) for label, digest, path in entries)
    return BatchPlan(adapters, tuple(servers), questions)


@dataclass(frozen=True)
class Verdict:
    kind: str  # DONE, RETRY, RELOAD or FATAL
    reason: str = ""  # why, for FATAL: what to change


def outcome(action: str, status: int | None, detail: str, attempt: int) -> Verdict:
    """What an answer to a load or unload means. `status`: the HTTP status, None where no answer came
    (refused connection, timeout, dropped); `detail`: the server's error message; `attempt`: 0 for
    the first request, then 1, 2, ... for its retries (an earlier attempt may have landed unanswered)."""
    if status == 200:
        return Verdict(DONE)
    if status is None or status >= 500 or status in RETRIED_STATUS:
        return Verdict(RETRY)
    if action == LOAD and status == 400 and ALREADY_LOADED in detail:
        # After a retry it is our own earlier attempt; on the first, a killed run's with the same
        # weights (the name holds their digest), whose files may be gone with it: load ours instead.
        return Verdict(DONE if attempt else RELOAD)
    if action == UNLOAD and status == 404 and NOT_LOADED in detail:
        return Verdict(DONE)  # not loaded is what an unload wants (after a retry: our earlier attempt landed)
    if action == LOAD and status == 404 and NO_ADAPTER_FILES in detail:
        return Verdict(FATAL, "the server cannot read the adapter's files: influence.adapter_dir must be a directory "
                              "the server sees at the same path (on its machine, or a shared filesystem)")
    if status == 404:
        return Verdict(FATAL, "the server has no runtime LoRA endpoints: start vLLM with --enable-lora and the "
                              "environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (docs/vllm-adapters.md)")
    return Verdict(FATAL, "the server refused the request")
