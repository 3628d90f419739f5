"""Loading and unloading LoRA adapters on the servers of the server influence path.

`AdapterClient` is the seam: what the path needs of a server's adapter endpoints. `VLLMAdapterClient`
is the one implementation, vLLM's runtime LoRA endpoints (`POST /v1/load_lora_adapter` with
{"lora_name", "lora_path"}, `POST /v1/unload_lora_adapter` with {"lora_name"}; docs/vllm-adapters.md),
over the openai backend's own HTTP clients (its headers, API key and timeout), retried as
`server_plan.outcome` says with the backend's `server.retries` and `server.backoff`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

import httpx

from harness.backends.openai import OpenAIBackend, ServerError, error_detail
from harness.dits.influence.server_plan import DONE, FATAL, LOAD, RELOAD, UNLOAD, outcome
from harness.errors import HarnessError


class AdapterClient(Protocol):
    def load(self, server: str, name: str, path: str) -> None:
        """Adapter `name` on `server` (a base URL ending in /v1) holds the weights at `path`."""

    def unload(self, server: str, name: str) -> None:
        """Adapter `name` is no longer loaded on `server`."""


class VLLMAdapterClient:
    """vLLM's runtime LoRA endpoints. `clients`: an HTTP client per server base URL (ending in /v1)."""

    ROUTES = {LOAD: "/load_lora_adapter", UNLOAD: "/unload_lora_adapter"}

    def __init__(self, clients: Mapping[str, httpx.Client], retries: int, backoff: float):
        self.clients, self.retries, self.backoff = dict(clients), retries, backoff

    @classmethod
    def of(cls, backend: OpenAIBackend) -> VLLMAdapterClient:
        """The endpoints of an openai backend's servers, over its own clients and retry settings."""
        return cls({s.base_url: s.client for s in backend.servers}, backend.retries, backend.backoff)

    def load(self, server: str, name: str, path: str) -> None:
        self._call(LOAD, server, {"lora_name": name, "lora_path": path})

    def unload(self, server: str, name: str) -> None:
        self._call(UNLOAD, server, {"lora_name": name})

    def _call(self, action: str, server: str, body: dict, start: int = 0) -> None:
        """Post `body` until `outcome` says done or fatal, or the retries run out. `start`: the first
        attempt's number (1 after a reload: a later "already loaded" is then our own load landing)."""
        url = server + self.ROUTES[action]
        failure = ""
        for attempt in range(start, start + self.retries + 1):
            if attempt > start:
                time.sleep(self.backoff * 2 ** (attempt - start - 1))
            try:
                response = self.clients[server].post(url, json=body)
                status, detail = response.status_code, error_detail(response) if response.status_code != 200 else ""
            except httpx.HTTPError as e:
                status, detail = None, f"{type(e).__name__} ({e})" if str(e) else type(e).__name__
            verdict = outcome(action, status, detail, attempt)
            if verdict.kind == DONE:
                return
            if verdict.kind == FATAL:
                raise HarnessError(f"{url} ({body['lora_name']}): HTTP {status}: {detail}; {verdict.reason}")
            if verdict.kind == RELOAD:
                self.unload(server, body["lora_name"])
                return self._call(action, server, body, start=attempt + 1)
            failure = detail if status is None else f"HTTP {status} ({detail})"
        raise ServerError(f"{url} ({body['lora_name']}): {failure} after {self.retries + 1} attempts; "
                          "the stage failed, --resume starts it again")
