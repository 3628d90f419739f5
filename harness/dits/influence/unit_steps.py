"""Every unit's step from theta* at once: the units' gradients from shared backward passes, then each
unit's update by the reference path's own optimizer (`STEP_OPTIMIZERS`), in memory (no adapter on disk).

A pass holds `micro_batch` pairs whatever their units, and takes one backward pass for all of them. To
keep each unit's gradient apart from the others', every LoRA matrix gains, for the pass, a zero leaf
per unit in it, E_u, added to the matrix's output while unit u's pairs go forward (x E_u^T): the
forward is unchanged to the bit (exact zeros are added), and the gradient that reaches E_u is the LoRA
matrix's gradient over unit u's pairs alone. Each unit's losses are divided by its size, so E_u's
gradient is that of the unit's mean DPO loss, the loop's (`ReferencePath.step`) summed in another
order. A unit's pairs in a pass go forward together, in the path's own way (`unit_logps`: the fast
path encodes each prompt once for both responses), so the forward passes are the loop's.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import torch


class UnitGradients:
    """Gradients of the units' mean DPO losses w.r.t. a peft model's trainable LoRA parameters
    (`params`, in their order), flattened: one row per unit."""

    def __init__(self, model, params: list[torch.Tensor]):
        from peft.tuners.lora import LoraLayer

        self.model, self.params = model, params
        index = {id(p): k for k, p in enumerate(params)}
        # (module whose output gains the unit's leaf, the index of the parameter it stands for)
        self.matrices = [(getattr(layer, side)["default"], index[id(getattr(layer, side)["default"].weight)])
                         for layer in model.modules() if isinstance(layer, LoraLayer) for side in ("lora_A", "lora_B")]
        if len(self.matrices) != len(params):
            raise ValueError(f"{len(params)} trainable parameters, {len(self.matrices)} LoRA matrices of the default "
                             "adapter: the unit gradients cover the LoRA matrices only")
        self.offsets = [0, *itertools.accumulate(p.numel() for p in params)]
        self.slot = 0  # the unit (its leaf) whose pairs go forward now

    def __call__(self, units: list[list[int]], pair_losses, micro_batch: int) -> torch.Tensor:
        """(len(units), parameters): row u is the gradient of the mean of `pair_losses` (each pair's
        loss, from a forward pass over the pairs it is given) over units[u]."""
        items = [(u, i) for u, unit in enumerate(units) for i in unit]
        grads = torch.zeros(len(units), self.offsets[-1], device=self.params[0].device)
        wanted = [p.requires_grad for p in self.params]
        self.model.train()  # as the loop's step (LoRA dropout, where there is any, draws as there)
        for p in self.params:  # only the units' leaves take gradients
            p.requires_grad_(False)
        try:
            for lo in range(0, len(items), micro_batch):
                part = items[lo:lo + micro_batch]
                present = list(dict.fromkeys(u for u, _ in part))
                with self.unit_leaves(len(present)) as leaves:
                    total = 0.0
                    for self.slot, u in enumerate(present):
                        total = total + pair_losses([i for v, i in part if v == u]).sum() / len(units[u])
                    total.backward()
                for (_, k), leaf in zip(self.matrices, leaves):
                    grads[present, self.offsets[k]:self.offsets[k + 1]] += leaf.grad.reshape(len(present), -1)
        finally:
            for p, w in zip(self.params, wanted):
                p.requires_grad_(w)
            self.model.eval()  # as the loop's step leaves it: the validation dialogues decode in eval mode
        return grads

    @contextmanager
    def unit_leaves(self, n: int):
        """For the duration, each LoRA matrix's output gains x E[slot]^T, E a zero leaf of n units."""
        leaves = [torch.zeros(n, *module.weight.shape, device=module.weight.device, dtype=module.weight.dtype,
                              requires_grad=True) for module, _ in self.matrices]

        def hook(leaf, module, inputs, out):
            return out + inputs[0] @ leaf[self.slot].T

        handles = [module.register_forward_hook(lambda m, i, o, leaf=leaf: hook(leaf, m, i, o))
                   for (module, _), leaf in zip(self.matrices, leaves)]
        try:
            yield leaves
        finally:
            for h in handles:
                h.remove()

    def views(self, row: torch.Tensor) -> list[torch.Tensor]:
        """One unit's flattened gradient as tensors shaped like `params`."""
        return [row[self.offsets[k]:self.offsets[k + 1]].view_as(p) for k, p in enumerate(self.params)]


@torch.no_grad()
def apply_step(params: list[torch.Tensor], theta_star: list[torch.Tensor], grads: list[torch.Tensor], optimizer,
               eta: float) -> None:
    """theta': `params` restored to theta*, then a fresh optimizer's (`STEP_OPTIMIZERS`) one step with
    the unit's gradient `grads`: the same arithmetic as the loop's step once its gradient is summed."""
    for p, saved, g in zip(params, theta_star, grads):
        p.copy_(saved)
        p.grad = g.clone()
    optimizer(params, eta).step()
    for p in params:
        p.grad = None
