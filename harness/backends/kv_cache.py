"""The HF engine's key/value cache: per-conversation slots kept between requests, and the decoding
cache a batch of them is padded into.

A slot keeps the token ids of a conversation's latest prompt (and reply) and the keys/values the
model computed for them; the next request on the slot encodes only the tokens past their common
prefix. A batch decodes from its slots left-padded to one length, in buffers with room to grow."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


@dataclass
class Slot:
    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, each (1, kv_heads, len(ids), head_dim)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RoomyLayer(DynamicLayer):
    """A decoding cache layer whose buffers have room past their length: a step writes its one
    column in place, where transformers' DynamicLayer copies the whole cache (torch.cat) every
    step; at 24 rows of 1,000-1,500 tokens that copy was 40% of CPU decoding time."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        # No super().__init__(): it assigns `keys`/`values`, which are views of the buffers here.
        self.is_initialized = True
        self._k, self._v, self._n = keys, values, length
        self.dtype, self.device = keys.dtype, keys.device

    @property
    def keys(self) -> torch.Tensor:
        return self._k[:, :, :self._n]

    @property
    def values(self) -> torch.Tensor:
        return self._v[:, :, :self._n]

    def update(self, key_states, value_states, *args, **kwargs):
        n, t = self._n, key_states.shape[-2]
        if n + t > self._k.shape[2]:  # out of room: double it (one copy, not one per step)
            self._k, self._v = (torch.cat([b, b.new_zeros(*b.shape[:2], n + t, b.shape[3])], dim=2)
                                for b in (self._k, self._v))
        self._k[:, :, n:n + t] = key_states
        self._v[:, :, n:n + t] = value_states
        self._n = n + t
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._n

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._n + query_length, 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]


def padded_cache(slots: list[Slot | None], reuse: list[int], past_len: int, room: int) -> Cache:
    """The slots' first `reuse[b]` keys/values left-padded to `past_len`, in buffers with `room` more
    columns (an empty cache of full-length layers where nothing is reused, as `HFBackend._prefill`'s)."""
    if past_len == 0:
        return DynamicCache()
    template = next(s.kv for s, p in zip(slots, reuse) if p)
    layers = []
    for layer, (k0, v0) in enumerate(template):
        k = k0.new_zeros(len(slots), k0.shape[1], past_len + room, k0.shape[3])
        v = v0.new_zeros(len(slots), v0.shape[1], past_len + room, v0.shape[3])
        for b, (slot, p) in enumerate(zip(slots, reuse)):
            if p:
                k[b, :, past_len - p:past_len] = slot.kv[layer][0][0, :, :p]
                v[b, :, past_len - p:past_len] = slot.kv[layer][1][0, :, :p]
        layers.append(RoomyLayer(k, v, past_len))
    return Cache(layers=layers)


def row_slot(ids: list[int], cache: Cache, mask: torch.Tensor, row: int) -> Slot:
    """Row `row` of a decoding cache as a slot holding `ids`: the columns its attention mask keeps
    (padding and rejected guesses removed)."""
    columns = mask[row].nonzero().squeeze(1).to(cache.layers[0].keys.device)
    assert len(columns) == len(ids), (len(columns), len(ids))
    return Slot(ids, [(layer.keys[row:row + 1].index_select(2, columns),
                       layer.values[row:row + 1].index_select(2, columns)) for layer in cache.layers])

