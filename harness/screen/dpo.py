"""The DPO loss on a LoRA policy, for the influence steps (one optimizer step per unit).

The reference policy is the same model with its adapter switched off, as trl does for a PEFT model
with `ref_model=None`; its log-probabilities are fixed, so they are computed once per pair and
shared by the warm-up and every unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class EncodedPair:
    prompt: list[int]
    chosen: list[int]  # the response's tokens, end of turn included
    rejected: list[int]


def encode_pair(tokenizer, pair: dict) -> EncodedPair:
    """Prompt = the speaker's memory with the generation prompt; responses = one assistant turn."""
    prompt_text = tokenizer.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)

    def response(text: str) -> list[int]:
        full = tokenizer.apply_chat_template(pair["prompt"] + [{"role": "assistant", "content": text}],
                                             tokenize=False)
        if not full.startswith(prompt_text):
            raise ValueError("the chat template renders the prompt differently with a response after it")
        return tokenizer(full[len(prompt_text):], add_special_tokens=False).input_ids

    return EncodedPair(tokenizer(prompt_text, add_special_tokens=False).input_ids,
                       response(pair["chosen"]), response(pair["rejected"]))


def response_logps(model, pairs: list[EncodedPair], pad_id: int) -> torch.Tensor:
    """Summed log-probability of each response given its prompt: (chosen, rejected) rows per pair,
    in one right-padded forward pass; shape (len(pairs), 2)."""
    seqs = [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    width = max(len(a) + len(b) for a, b in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    scored = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, (prompt, resp) in enumerate(seqs):
        n = len(prompt) + len(resp)
        ids[row, :n] = torch.tensor(prompt + resp)
        mask[row, :n] = 1
        scored[row, len(prompt) - 1:n - 1] = True  # position t predicts token t + 1
    device = next(model.parameters()).device
    ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
    # Logits of the response positions only: the full (rows, width, vocab) tensor of long prompts and
    # its softmax took tens of GB in the backward pass (SmolLM2's 49k vocabulary on CBT prompts).
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=scored).logits
    logits = logits.reshape(-1, logits.shape[-1]).float()  # (scored positions, vocab), row-major
    targets = torch.roll(ids, -1, dims=1)[scored]
    token_lp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    rows = scored.nonzero()[:, 0]
    return torch.zeros(len(seqs), device=device, dtype=token_lp.dtype).index_add(0, rows, token_lp).view(len(pairs), 2)


def shared_prompt_logps(model, pairs: list[EncodedPair]) -> torch.Tensor:
    """`response_logps` with each pair's prompt encoded once for both responses: the prompt, unpadded,
    then the two responses on its keys/values. The same function (for a deterministic forward pass;
    LoRA dropout would draw one mask where `response_logps` draws two), at about half the work when
    prompts of 500-1,500 tokens dwarf one-turn responses."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    rows = []
    for p in pairs:
        prompt = model(input_ids=torch.tensor([p.prompt], device=device), use_cache=True, logits_to_keep=1)
        width = max(len(p.chosen), len(p.rejected))
        # Right padding needs no mask: no response token attends to the padding after it.
        ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in (p.chosen, p.rejected)], device=device)
        past = DynamicCache([(layer.keys.expand(2, -1, -1, -1), layer.values.expand(2, -1, -1, -1))
                             for layer in prompt.cache.layers])
        positions = torch.arange(len(p.prompt), len(p.prompt) + width - 1, device=device).expand(2, -1)
        # Row r's positions: the prompt's last one predicts its first token, each token the next.
        logits = [prompt.logits.expand(2, -1, -1)]
        if width > 1:
            logits.append(model(input_ids=ids[:, :-1], position_ids=positions, cache=past,
                                use_cache=True).logits)
        logits = torch.cat(logits, dim=1).float()
        token_lp = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        lengths = torch.tensor([len(p.chosen), len(p.rejected)], device=device)
        rows.append((token_lp * (torch.arange(width, device=device) < lengths[:, None])).sum(1))
    return torch.stack(rows)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """Sigmoid DPO loss per pair, from (chosen, rejected) log-probabilities of policy and reference."""
    margin = (policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])
    return -F.logsigmoid(beta * margin)
