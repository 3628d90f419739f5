"""Attention kernels the HF engine registers with transformers: one for a row whose queries follow a
cache (the influence fast path's checks), one for masked passes of several queries over grouped
key/value heads (lookahead steps, prefills on a cached prefix)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

CAUSAL_AFTER_CACHE = "causal_after_cache"


def causal_after_cache(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for one unpadded row whose queries follow the keys/values already cached: every
    query sees all the cached positions and the new ones up to its own. sdpa's causal flag aligns
    the mask to the first key, so transformers passes an explicit mask once a cache holds keys, and
    CPU flash attention then computes every block of it; here the cached keys and the new ones are
    two flash passes (the second causal, skipping the blocks above the diagonal), joined by their
    log-sum-exps. Other devices get the lower-right causal mask, which their kernels take as is."""
    from torch.nn.attention.bias import causal_lower_right
    from transformers.integrations.sdpa_attention import repeat_kv

    if attention_mask is not None:
        raise ValueError(f"{CAUSAL_AFTER_CACHE} attention takes unpadded single rows, no attention mask")
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    q, n = query.shape[2], key.shape[2] - query.shape[2]
    if query.device.type != "cpu":
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=causal_lower_right(q, q + n), scale=scaling)
    else:
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out, lse = flash(query, key[:, :, n:], value[:, :, n:], 0.0, True, scale=scaling)
        if n:
            cached, cached_lse = flash(query, key[:, :, :n], value[:, :, :n], 0.0, False, scale=scaling)
            out = out + (cached - out) * torch.sigmoid(cached_lse - lse).unsqueeze(-1).to(out.dtype)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(CAUSAL_AFTER_CACHE, causal_after_cache)


GROUPED_SDPA = "grouped_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' sdpa attention, except that a masked pass of several queries attends to the
    grouped key/value heads as they are (torch's enable_gqa), where transformers copies them once per
    query head (repeat_kv): the lookahead's decoding steps and the prefills on a cached prefix. On CPU
    that copy was half of such a call (4 rows of 26 queries over 1,400 keys: 8.3 ms against 4.7 ms a
    layer on SmolLM2's heads), and the outputs are the same to the bit. Single queries (transformers
    folds their heads) and unmasked passes (flash's causal kernel) are left to transformers."""
    if (attention_mask is None or query.shape[2] == 1 or module.num_key_value_groups == 1
            or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_SDPA, grouped_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_SDPA, sdpa_mask)


@contextmanager
def grouped_attention(model):
    """`model` on grouped_sdpa for the duration, where it runs on sdpa (switching takes ~3 ms)."""
    if model.config._attn_implementation != "sdpa":
        yield
        return
    model.set_attn_implementation(GROUPED_SDPA)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")
