"""Generation and scoring engines behind one interface, and the one factory that builds them."""

from __future__ import annotations

from harness.backends.base import Backend, Choice, Completion, Request, Sampling, Usage
from harness.backends.response_cache import CachedBackend, ResponseCache
from harness.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("hf", "harness.backends.hf:HFBackend")
BACKENDS.register("openai", "harness.backends.openai:OpenAIBackend")
BACKENDS.register("llama.cpp", "harness.backends.llamacpp:LlamaCppBackend")


def make_backend(cfg, model: str | None = None, **settings) -> Backend:
    """The backend `cfg.backend` names (default "hf") on `model` (default `cfg.model`), built with the
    runtime settings its class declares (`Backend.settings`: device, dtype, batch size, the server
    section...) from cfg where it has them; keyword `settings` override cfg's (the lm-eval bridge has
    no config: `make_backend(None, model=..., device=...)`). With `cfg.cache` set, it answers through
    the response cache in that directory."""
    name = getattr(cfg, "backend", None) or "hf"
    kind = BACKENDS.get(name)
    fields = {key: getattr(cfg, key) for key in kind.settings if hasattr(cfg, key)}
    fields |= {key: value for key, value in settings.items() if key in kind.settings}
    # Opened before the model loads: a bad cache directory fails at once.
    cache = ResponseCache(cfg.cache) if getattr(cfg, "cache", None) else None
    backend = kind(model=model or cfg.model, **fields)
    if cache is None:
        return backend
    return CachedBackend(backend, cache,
                         {"backend": name, "device": fields.get("device"), "dtype": fields.get("dtype")})


__all__ = ["BACKENDS", "Backend", "Choice", "Completion", "Request", "Sampling", "Usage", "make_backend"]
