"""Generation and scoring engines behind one interface, and the one factory that builds them."""

from __future__ import annotations

from harness.backends.base import Backend, Choice, Completion, Request, Sampling, Usage
from harness.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("hf", "harness.backends.hf:HFBackend")

# What a backend is built from, besides its model: every runtime config carries these keys.
SETTINGS = ("device", "dtype", "batch_size", "kv_cache")


def make_backend(cfg, model: str | None = None, **settings) -> Backend:
    """The backend `cfg.backend` names (default "hf") on `model` (default `cfg.model`), built with
    cfg's device, dtype, batch size and key/value cache where it has them; keyword `settings`
    override cfg's (the lm-eval bridge has no config: `make_backend(None, model=..., device=...)`)."""
    fields = {key: getattr(cfg, key) for key in SETTINGS if hasattr(cfg, key)} | settings
    return BACKENDS.get(getattr(cfg, "backend", None) or "hf")(model=model or cfg.model, **fields)


__all__ = ["BACKENDS", "Backend", "Choice", "Completion", "Request", "Sampling", "Usage", "make_backend"]
