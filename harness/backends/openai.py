"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, a hosted endpoint) as a backend.

Generation goes to `/v1/chat/completions`, one HTTP request per `Request`, spread over the servers
(`server.base_urls`) with at most `server.concurrency` in flight on each. Scoring (`loglikelihood`,
`turn_nll`) goes to `/v1/completions` with `echo` and `logprobs`, the prompt rendered here with the
model's own chat template: a continuation's tokens are the last ones of the echoed prompt, counted
with the local tokenizer (lm-eval's convention), so a server that prepends a BOS scores the same. A
server that returns no prompt log-probabilities is refused in one line: scoring never falls back.

A request that fails (refused connection, timeout, 5xx, malformed JSON) is retried `server.retries`
times with exponential backoff; then the call fails with one `ServerError` line, which fails the
stage cleanly: `--resume` starts it again. A 4xx other than 408/429 is the request's fault and is
not retried. The API key is read from the environment variable `server.api_key_env` names and is
never written anywhere.

Sampling follows the OpenAI semantics (temperature, top_p, seed per request). Servers add their own
samplers on top unless told otherwise (llama.cpp's: top_k 40, min_p 0.05, repeat_penalty 1.1), so
each `server.flavour` sends the neutral values of its server's extras (`FLAVOURS`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from harness.backends.base import Backend, Choice, Completion, Request, Sampling, turn_frame
from harness.errors import HarnessError

# The request fields that switch a server's own samplers off, so temperature and top_p alone decide.
FLAVOURS = {
    "openai": {},
    "vllm": {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0},
    "llama.cpp": {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0},
}
RETRIED_STATUS = {408, 429}  # besides 5xx


class ServerError(HarnessError):
    """A server that stayed unreachable or kept failing after the retries: the stage fails, `--resume`
    redoes it. Not the input's fault: exit status 1."""

    exit_code = 1


@dataclass
class Server:
    """One server: its base URL (ending in /v1), its HTTP client, and the slots that bound its load."""

    base_url: str
    client: httpx.Client
    slots: threading.Semaphore


class OpenAIBackend(Backend):
    """Any OpenAI-compatible server (vLLM, SGLang, llama.cpp's, hosted): chat generation and prompt scoring.

    `model`: what the run calls the model (a catalogue name, directory or hub id), also where the
    tokenizer and chat template come from unless `server.tokenizer` names another; the servers are
    asked for it by the name `server.model_ids` gives it, else by `model` itself (a LoRA adapter
    served by `vllm serve --enable-lora` is addressed by its own name: `Request.adapter`).
    """

    settings = ("batch_size", "server")  # what `make_backend` passes from a run's config

    def __init__(self, model: str, server, batch_size: int = 32, base_urls: list[str] | None = None,
                 flavour: str | None = None, model_info: dict | None = None):
        """`server`: a `harness.config.ServerConfig` (or anything with its fields); `base_urls` and
        `flavour` override its own (a server this harness started)."""
        urls = base_urls or [u for u in (server.base_urls or "").split(",") if u.strip()]
        urls = [u.strip().rstrip("/") for u in urls]
        urls = [u if u.endswith("/v1") else u + "/v1" for u in urls]
        if not urls:
            raise HarnessError("backend openai: set server.base_urls (comma-separated, e.g. http://127.0.0.1:8000/v1)")
        flavour = flavour or server.flavour
        if flavour not in FLAVOURS:
            raise HarnessError(f"server.flavour {flavour!r}: one of {', '.join(FLAVOURS)}")
        headers = {}
        if server.api_key_env:
            key = os.environ.get(server.api_key_env)
            if not key:
                raise HarnessError(f"server.api_key_env: the environment variable {server.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=server.concurrency, max_keepalive_connections=server.concurrency)
        self.servers = [Server(u, httpx.Client(headers=headers, timeout=server.timeout, limits=limits),
                               threading.Semaphore(server.concurrency)) for u in urls]
        self.model_id = served_name(server, model)
        self.retries, self.backoff, self.extra = server.retries, server.backoff, FLAVOURS[flavour]
        self._pool = ThreadPoolExecutor(max_workers=server.concurrency * len(self.servers),
                                        thread_name_prefix="openai")
        self._turn_frame: tuple[str, str] | None = None
        self._next = 0
        info = (model_info or {"name": model}) | {
            "backend": "openai", "flavour": flavour, "model_id": self.model_id, "revision": server.revision,
            "base_url": ",".join(urls), "servers": [self._describe(s) for s in self.servers]}
        for described in info["servers"]:
            # A server that answers whatever name it is asked for (llama.cpp's does) would otherwise
            # answer for a policy it does not hold.
            if described["model_ids"] and self.model_id not in described["model_ids"]:
                raise HarnessError(f"{described['base_url']} does not serve {self.model_id!r} (it lists "
                                   f"{', '.join(map(str, described['model_ids']))}); name it in server.model_ids")
        tokenizer = load_tokenizer(server.tokenizer or model)
        super().__init__(info, tokenizer, batch_size)
        self.usage.extra.update(retries=0)

    # -- interface ---------------------------------------------------------------------------
    def generate(self, requests: list[Request], sampling: Sampling, seed: int = 0) -> list[Completion]:
        start = time.perf_counter()
        seeds = self.sample_seeds(requests, seed)
        bodies = [{"model": r.adapter or self.model_id, "messages": r.messages, "max_tokens": sampling.max_new_tokens,
                   "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": s, "stream": False}
                  | ({"stop": list(sampling.stop)} if sampling.stop else {}) | self.extra
                  for r, s in zip(requests, seeds)]
        replies = self._post_all("/chat/completions", bodies)
        out = []
        for reply in replies:
            choice, usage = reply["choices"][0], reply.get("usage") or {}
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            out.append(Completion(choice["message"].get("content") or "", usage.get("prompt_tokens", 0),
                                  usage.get("completion_tokens", 0),
                                  "length" if choice.get("finish_reason") == "length" else "stop", cached))
            self.usage.requests += 1
            self.usage.prompt_tokens += out[-1].prompt_tokens
            self.usage.cached_tokens += cached
            self.usage.completion_tokens += out[-1].completion_tokens
        self.usage.generate_calls += 1
        self.usage.seconds += time.perf_counter() - start
        return out

    def loglikelihood(self, choices: list[Choice]) -> list[list[tuple[float, int]]]:
        tokenizer = self.tokenizer
        jobs = []  # (prompt, adapter, tokens scored at its end)
        for c in choices:
            context = tokenizer.apply_chat_template(c.messages, tokenize=False, add_generation_prompt=True) + c.prefix
            n_context = len(tokenizer(context, add_special_tokens=False).input_ids)
            for cont in c.continuations:
                n = len(tokenizer(context + cont, add_special_tokens=False).input_ids) - n_context
                if n < 1:
                    raise ValueError(f"an empty continuation among {c.continuations!r}")
                jobs.append((context + cont, c.adapter, n))
        scored = iter(self._score(jobs))
        return [[next(scored) for _ in c.continuations] for c in choices]

    def turn_nll(self, texts: list[str]) -> list[float]:
        """As the HF engine: the text as one assistant message, its content and end of turn scored."""
        tokenizer = self.tokenizer
        if self._turn_frame is None:
            self._turn_frame = turn_frame(tokenizer)
        head, tail = self._turn_frame
        n_head = len(tokenizer(head, add_special_tokens=False).input_ids)
        jobs = [(head + t + tail, None, len(tokenizer(head + t + tail, add_special_tokens=False).input_ids) - n_head)
                for t in texts]
        return [-total / n for total, n in self._score(jobs)]

    # -- scoring -----------------------------------------------------------------------------
    def _score(self, jobs: list[tuple[str, str | None, int]]) -> list[tuple[float, int]]:
        """Summed log-probability of the last n prompt tokens of each (prompt, adapter, n)."""
        bodies = [{"model": adapter or self.model_id, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
                   "echo": True, "logprobs": 1, "stream": False} | self.extra for prompt, adapter, _ in jobs]
        out = []
        for (_, _, n), reply in zip(jobs, self._post_all("/completions", bodies)):
            logprobs = (reply["choices"][0].get("logprobs") or {}).get("token_logprobs") or []
            usage = reply.get("usage") or {}
            # The echoed prompt's entries, then the generated token's where one was (as the server
            # counts it); servers may leave out entries of their own (llama.cpp: a BOS inside the
            # prompt), never the last ones.
            end = len(logprobs) - usage.get("completion_tokens", 0)
            span = logprobs[end - n:end] if end - n >= 0 else []
            if len(span) < n or any(lp is None for lp in span):
                raise HarnessError(f"{self.model_id}: the server returned no prompt log-probabilities "
                                   "(/v1/completions with echo and logprobs); it cannot score answers or "
                                   "the reward's language term (llama.cpp's server: --logits_all true)")
            out.append((float(sum(span)), n))
            self.usage.requests += 1
            self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
            self.usage.scored_tokens += n
        return out

    # -- transport ---------------------------------------------------------------------------
    def _post_all(self, path: str, bodies: list[dict]) -> list[dict]:
        """Every body posted (round robin over the servers, bounded per server), replies in order."""
        start, self._next = self._next, self._next + len(bodies)
        futures = [self._pool.submit(self._post, self.servers[(start + i) % len(self.servers)], path, body)
                   for i, body in enumerate(bodies)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _post(self, server: Server, path: str, body: dict) -> dict:
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.usage.extra["retries"] += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            with server.slots:
                try:
                    response = server.client.post(server.base_url + path, json=body)
                except httpx.HTTPError as e:
                    failure = f"{type(e).__name__} ({e})" if str(e) else type(e).__name__
                    continue
            if response.status_code >= 500 or response.status_code in RETRIED_STATUS:
                failure = f"HTTP {response.status_code} ({error_detail(response)})"
                continue
            if response.status_code >= 400:
                raise HarnessError(f"{server.base_url}{path}: HTTP {response.status_code}: {error_detail(response)}")
            try:
                reply = response.json()
                reply["choices"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                failure = "malformed JSON reply"
                continue
            return reply
        raise ServerError(f"{server.base_url}{path}: {failure} after {self.retries + 1} attempts; "
                          "the stage failed, --resume starts it again")

    def _describe(self, server: Server) -> dict:
        """What the run record names of a server: its URL, the model ids it serves and its version."""
        described = {"base_url": server.base_url, "model_ids": [], "version": None}
        try:
            listed = server.client.get(server.base_url + "/models", timeout=10)
            described["model_ids"] = [m.get("id") for m in listed.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError):
            raise ServerError(f"{server.base_url}/models: no OpenAI-compatible server answers there") from None
        root = server.base_url.removesuffix("/v1")
        for probe, key in (("/version", "version"), ("/props", "build_info")):  # vLLM's, llama.cpp's
            try:
                reply = server.client.get(root + probe, timeout=5)
                if reply.status_code == 200:
                    described["version"] = reply.json().get(key)
                    break
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
        return described

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in self.servers:
            s.client.close()


def served_name(server, model: str) -> str:
    """The id `model` is served under: its entry in `server.model_ids`, else its own name."""
    for pair in filter(None, (server.model_ids or "").split(",")):
        name, sep, served = pair.partition("=")
        if not sep or not name.strip() or not served.strip():
            raise HarnessError(f"server.model_ids: {pair!r} is not model=id")
        if name.strip() == model:
            return served.strip()
    return model


def load_tokenizer(name: str):
    """The tokenizer of a catalogue model, local directory or hub id: the agents' prompts are
    counted, and scoring prompts rendered, with it."""
    from transformers import AutoTokenizer

    from harness import models

    try:
        return AutoTokenizer.from_pretrained(models.resolve(name))
    except (OSError, ValueError) as e:
        raise HarnessError(f"server.tokenizer {name!r}: no tokenizer there ({' '.join(str(e).split())[:160]}); "
                           "name a catalogue model, directory or hub id with the served model's tokenizer") from None


def error_detail(response: httpx.Response) -> str:
    """A server's error message, on one line."""
    try:
        body = response.json()
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("detail")
        text = message if isinstance(message, str) else json.dumps(body)
    except ValueError:
        text = response.text
    return " ".join(text.split())[:300]
