"""Generation and scoring engines behind one interface."""

from harness.backends.base import Backend, Choice, Completion, Request, Sampling, Usage
from harness.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("backend")
BACKENDS.register("hf", "harness.backends.hf:HFBackend")

__all__ = ["BACKENDS", "Backend", "Choice", "Completion", "Request", "Sampling", "Usage"]
