"""The model a bench measures: a catalogue model or a local directory as it is, or (`random_init`) a
model of the same architecture built from its config with seeded random weights.

Throughput does not depend on the weights' values, so a random model of Llama-3-8B's config measures
what the real one would, where the real weights are too large to bring. It speaks with the tokenizer
of `tokenizer` (default: the model's own directory's); ids past that tokenizer's vocabulary decode to
nothing, so a larger vocabulary still works.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from harness import models
from harness.errors import HarnessError


class Subject:
    def __init__(self, name: str, device: str, dtype: str, workdir: Path, random_init: bool = False,
                 tokenizer: str | None = None, seed: int = 0):
        self.name, self.device, self.dtype, self.seed = name, device, dtype, seed
        self.random_init, self.tokenizer = random_init, tokenizer
        self.source = models.resolve(name)
        self._workdir = workdir
        self._model: torch.nn.Module | None = None
        self._directory: Path | None = None if random_init else self.source

    def model(self) -> torch.nn.Module:
        """The model in memory on the device, in eval mode (built or loaded once)."""
        if self._model is None:
            if self.random_init:
                from transformers import AutoConfig, AutoModelForCausalLM

                torch.manual_seed(self.seed)
                # Built on the device itself: initialising 8B parameters on the CPU takes minutes.
                with torch.device(self.device):
                    self._model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.source),
                                                                   dtype=getattr(torch, self.dtype))
                self._model.eval()
            else:
                self._model = models.load(self.name, self.device, self.dtype)[0]
        return self._model

    def directory(self) -> str:
        """A model directory the engines load (`--model` of every command): for a random model,
        written once into the bench's working folder with the tokenizer and a recorded identity
        (the config and the seed), so that no engine hashes gigabytes of random weights."""
        if self._directory is None:
            from transformers import AutoTokenizer

            tokenizer_dir = models.resolve(self.tokenizer) if self.tokenizer else self.source
            try:
                tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            except (OSError, ValueError) as e:
                raise HarnessError(f"{tokenizer_dir}: no tokenizer to speak with ({e}); "
                                   "name one with --tokenizer") from None
            out = self._workdir / f"random-{Path(self.name).name}"
            model = self.model()
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            (out / "harness_model.json").write_text(json.dumps(
                {"name": out.name, "recipe": "random-init", "sha256": self.identity()}, indent=1))
            self._directory = out
        return str(self._directory)

    def identity(self) -> str:
        """What names the weights: the config and the seed for a random model, else the weights' hash."""
        if not self.random_init:
            return models.weights_hash(self.source)
        config = (self.source / "config.json").read_bytes()
        return hashlib.sha256(config + f"seed={self.seed},dtype={self.dtype}".encode()).hexdigest()

    def facts(self) -> dict:
        params, nbytes = matmul_weights(self.model())
        # The name and the weights' identity, not where this machine keeps them: the record travels
        return {"name": self.name, "random_init": self.random_init,
                "seed": self.seed if self.random_init else None, "tokenizer": self.tokenizer,
                "dtype": self.dtype, "device": self.device, "identity": self.identity(),
                "architecture": self.model().config.architectures or [type(self.model()).__name__],
                "matmul_params": params, "matmul_weight_bytes": nbytes}


def matmul_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, bytes) of the weights a decoding step multiplies by: every linear layer's, each
    tensor once (a head tied to the embedding is a linear layer too). An untied input embedding is
    a lookup of one row a token, neither multiplied nor read whole, so it is left out; so are the
    norms (a few thousand values)."""
    seen, params, nbytes = set(), 0, 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for p in module.parameters(recurse=False):
                if p.data_ptr() not in seen:
                    seen.add(p.data_ptr())
                    params += p.numel()
                    nbytes += p.numel() * p.element_size()
    return params, nbytes
