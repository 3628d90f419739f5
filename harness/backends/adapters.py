"""Per-row LoRA adapters: one forward pass in which each batch row answers with its own adapter."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch


class RowAdapters:
    """Forward passes in which row i answers with the peft model's LoRA adapter names[i], for the
    names of the latest `rows` call. peft's mixed-adapter batches run half a dozen small ops per
    adapter in every adapted layer, more time than the layer's own matmul at one token a row; here,
    while installed, the adapters are off and each adapted layer's output gains its rows' updates in
    two batched matmuls, x A_i^T (s_i B_i^T). Installing is done once a batch: peft switches its
    adapters off and on by walking every adapter's parameters (about 0.17 s on SmolLM2 with 9
    adapters, more than a decoding step). The stacked weights are kept per list of names, so one
    instance serves one batch (the adapters' weights may change between batches). Decoding runs in
    eval mode: no LoRA dropout applies."""

    def __init__(self, model):
        from peft.tuners.lora import LoraLayer

        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        self.stacks: dict[tuple[str, ...], list] = {}
        self.current: list = []

    @contextmanager
    def installed(self):
        if self.model.training:
            raise ValueError("rows naming adapters decode in eval mode")
        hooks = [layer.base_layer.register_forward_hook(partial(self._add, i)) for i, layer in enumerate(self.layers)]
        try:
            with self.model.disable_adapter():
                yield self
        finally:
            for hook in hooks:
                hook.remove()

    def rows(self, names: list[str]) -> None:
        key = tuple(names)
        if key not in self.stacks:
            self.stacks[key] = [(torch.stack([layer.lora_A[n].weight.T for n in names]),
                                 torch.stack([layer.lora_B[n].weight.T * layer.scaling[n] for n in names]))
                                for layer in self.layers]
        self.current = self.stacks[key]

    def _add(self, i: int, module, inputs, out):
        down, up = self.current[i]
        return out.baddbmm_(inputs[0].bmm(down), up)
