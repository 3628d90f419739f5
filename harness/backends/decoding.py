"""Picking tokens: greedy or sampled (each row from its own generator), near-ties, and the tokens
prompt lookup guesses ahead."""

from __future__ import annotations

import torch

from harness.backends.base import Sampling

# Top-two logit gaps below this are near-ties: the same logits computed another way (a whole sequence
# in one pass, or a token at a time; float32 differences ~1e-5) could pick the runner-up.
NEAR_TIE = 1e-3


def top_two(logits: torch.Tensor) -> tuple[list, list]:
    """The argmax of logits over their last dimension, and the gap to the runner-up (near-ties have
    gaps under NEAR_TIE), as nested lists of the leading dimensions."""
    top = logits.float().topk(2, dim=-1)
    return top.indices[..., 0].tolist(), (top.values[..., 0] - top.values[..., 1]).tolist()


def lookup(history: list[int], k: int, longest: int = 3) -> list[int]:
    """Up to `k` tokens guessed to come next: those that followed the latest earlier occurrence of the
    history's last n tokens, n from `longest` down to 1 (prompt lookup decoding). Dialogue agents
    copy their information and each other's messages, so the guesses often hold."""
    for n in range(min(longest, len(history) - 1), 0, -1):
        tail = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):
            if history[start:start + n] == tail:
                return history[start + n:start + n + k]
    return []


def pick(logits: torch.Tensor, sampling: Sampling, generators: list[torch.Generator]) -> torch.Tensor:
    """Each row's next token from its logits (rows, vocabulary): the argmax when greedy, else a draw
    from the row's own generator, so a row's text does not depend on the rows beside it."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, -1)
    order = None
    if sampling.top_p < 1.0:
        probs, order = probs.sort(-1, descending=True)
        probs = probs.masked_fill(probs.cumsum(-1) - probs > sampling.top_p, 0.0)
    # One uniform per row from its generator, then one batched inverse CDF: a multinomial per row
    # cost more than the tiny models' forward pass. right=True never lands on a zero-probability token.
    uniform = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    cdf = probs.double().cumsum(-1)
    index = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(-1), right=True)
    index = index.clamp_max(cdf.shape[-1] - 1)
    return (index if order is None else order.gather(-1, index)).squeeze(-1)
