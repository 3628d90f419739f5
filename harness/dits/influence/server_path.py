"""The server path (`influence.path=server`, `backend=openai`): the reference path's influence with the
validation dialogues answered by OpenAI-compatible servers that hold the units' LoRA adapters (vLLM).

The policy trains in this process as on the reference path (its warm-up and unit steps). Each unit's
adapter (theta') is written once with peft to a RAM-backed directory (`adapter_root`), loaded on every
server under a name of its own, and the validation dialogues of a batch of `max_loras` units are
submitted together through the openai backend, each naming its unit's adapter (`Dialogue.adapter`,
sent as `Request.adapter`); then the batch's adapters are unloaded and their files removed. theta*'s
dialogues are served the same way, so F(theta*) and every F(theta') come from one engine. The plan
(names, batches, order, retries) is `server_plan`'s; the adapter endpoints are `adapter_client`'s.

vLLM installs neither on the machines this project is tested on nor on the GPU machine sometimes lent
to it: the adapter endpoints are untested here (docs/vllm-adapters.md). The rest runs in the tests
against llama.cpp's server, with an adapter client that only records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from harness.backends.openai import OpenAIBackend
from harness.config import SelectConfig
from harness.dits.influence.adapter_client import AdapterClient, VLLMAdapterClient
from harness.dits.influence.reference_path import ReferencePath
from harness.dits.influence.server_plan import THETA_STAR, BatchPlan, batch_plan, batches, unit_label
from harness.errors import HarnessError
from harness.mas.dialogue import start

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # what peft writes an adapter's weights to


def adapter_root(configured: str | None) -> str:
    """Where adapters are written: `influence.adapter_dir`, else /dev/shm (RAM) where it is writable,
    else the temp directory. Absolute: the server reads it."""
    if configured:
        if not (os.path.isdir(configured) and os.access(configured, os.W_OK)):
            raise HarnessError(f"influence.adapter_dir {configured!r} is not a writable directory")
        return os.path.abspath(configured)
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


class ServerPath(ReferencePath):
    """Influence by the reference procedure, every validation dialogue answered by the servers of
    `server.base_urls` on its unit's adapter (see the module's docstring). `adapters`: the adapter
    endpoints (default vLLM's)."""

    name = "server"  # `influence.path` and `Estimate.path`

    def __init__(self, pairs, cfg: SelectConfig, task, policy: str, validation, key: str = "",
                 adapters: AdapterClient | None = None):
        if not key:
            raise HarnessError("influence.path=server names its adapters after the estimate's key: none was given")
        # Both checked before the policy loads: a wrong directory or server fails at once.
        self.adapter_root = adapter_root(cfg.influence.adapter_dir)
        backend = OpenAIBackend(policy, cfg.server, cfg.batch_size)
        super().__init__(pairs, cfg, task, policy, validation, key)
        self.backend = backend  # the policy's dialogues go to the servers; the in-process model only trains
        self.adapters = adapters or VLLMAdapterClient.of(backend)
        self.servers = [s.base_url for s in backend.servers]
        self.unit_seconds["adapters"] = 0.0  # writing, loading and unloading them

    def theta_star_dialogues(self):
        # `begin` asks right after the warm-up: the weights are theta*'s.
        return self.serve([THETA_STAR], lambda label: None)[THETA_STAR]

    def unit_scores(self, theta_star, units, eta: float, answers_before, desc: str | None = None, between=None):
        scored = []
        bar = tqdm(total=len(units), desc=desc, disable=desc is None, unit="unit", file=sys.stderr,
                   dynamic_ncols=True)
        for batch in batches(range(len(units)), self.cfg.influence.max_loras):
            index = {unit_label(i): i for i in batch}
            answered = self.serve(list(index), lambda label: self.step_from(theta_star, units[index[label]], eta))
            for label, i in index.items():
                f, answers, items = self.score(answered[label])
                scored.append((f, sum(a != b for a, b in zip(answers, answers_before)), items))
                bar.update(1)
                if between:
                    between(i)
        bar.close()
        return scored

    def serve(self, labels: list[str], prepare) -> dict:
        """Each label's validation dialogues, those of all labels submitted together: `prepare(label)`
        sets the policy's weights to that adapter's before they are written."""
        with tempfile.TemporaryDirectory(prefix=f"dits-{self.key}-", dir=self.adapter_root) as directory:
            entries = []
            for label in labels:
                prepare(label)
                written = Path(directory) / label
                entries.append((label, self.write_adapter(written), str(written)))
            plan = batch_plan(self.key, entries, self.servers, len(self.validation))
            loaded: set[tuple[str, str]] = set()
            try:
                started = time.perf_counter()
                for step in plan.loads():
                    self.adapters.load(step.server, step.adapter.name, step.adapter.path)
                    loaded.add((step.server, step.adapter.name))
                self.unit_seconds["adapters"] += time.perf_counter() - started
                started = time.perf_counter()
                rows = plan.rows()
                dialogues = start([self.validation[q] for _, q in rows], self.roster)
                for d, (adapter, _) in zip(dialogues, rows):
                    d.adapter = adapter.name
                self.dialogues_run += len(dialogues)
                self.dialogues(dialogues=dialogues)
                self.unit_seconds["validation"] += time.perf_counter() - started
            except BaseException:
                self.unload(plan, loaded, quietly=True)  # the failure, not an unload's, is the news
                raise
            self.unload(plan, loaded)
        return plan.collate(dialogues)

    def write_adapter(self, directory: Path) -> str:
        """The current LoRA weights written with peft to `directory`; the digest of their file."""
        started = time.perf_counter()
        self.model.save_pretrained(str(directory), selected_adapters=["default"], save_embedding_layers=False)
        digest = hashlib.sha256((directory / ADAPTER_WEIGHTS).read_bytes()).hexdigest()
        self.unit_seconds["adapters"] += time.perf_counter() - started
        return digest

    def unload(self, plan: BatchPlan, loaded: set[tuple[str, str]], quietly: bool = False) -> None:
        """The plan's unloads of the adapters `loaded` names; `quietly`: failures only logged."""
        started = time.perf_counter()
        for step in plan.unloads():
            if (step.server, step.adapter.name) not in loaded:
                continue
            try:
                self.adapters.unload(step.server, step.adapter.name)
            except HarnessError as e:
                if not quietly:
                    raise
                log.warning("adapter %s stays loaded on %s: %s", step.adapter.name, step.server, e)
        self.unit_seconds["adapters"] += time.perf_counter() - started
