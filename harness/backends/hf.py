"""transformers in-process: batched chat generation with per-conversation key/value caches.

Agent prompts of 600-1,000 tokens are re-read at every turn of a dialogue; on CPU that prompt
processing dominates. So each request may name a cache slot (`Request.cache_key`): after a request
the slot keeps the token ids and the keys/values the model computed for them, and the next request
on that slot encodes only the tokens past the longest common prefix with what it keeps. A slot may
also start from keys/values computed elsewhere with the same weights (`keep`).

A request's new prompt tokens (all but the last) are encoded alone, unpadded, on top of its slot;
then the batch decodes together from one token a row, the slots left-padded to a common length
with the attention mask hiding the padding and explicit position ids, so every row computes
exactly what a fresh encoding would. Greedy decoding may guess tokens ahead (`Sampling.lookahead`):
a step then feeds each row's token and its guesses, keeps the guesses the model would have
generated, and masks the others out of the cache (those masked passes of several queries attend on
the grouped key/value heads: `grouped_sdpa`). Rows may each answer with their own LoRA adapter of a
peft model (`Request.adapter`).

The engine's parts live beside it: the cache slots and the decoding cache (`kv_cache`), the per-row
adapters (`adapters`), its attention kernels (`attention`) and token picking (`decoding`).
"""

from __future__ import annotations

import time

import torch
from transformers import DynamicCache

from harness import models
from harness.backends.adapters import RowAdapters
from harness.backends.attention import grouped_attention
from harness.backends.base import Backend, Choice, Completion, Request, Sampling, turn_frame
from harness.backends.decoding import NEAR_TIE, lookup, pick, top_two
from harness.backends.kv_cache import Slot, common_prefix, padded_cache, row_slot


class HFBackend(Backend):
    """transformers in this process: batched decoding, a key/value cache slot per conversation.

    `keep`, `encode`, `eos_ids` and `kv_cache` are its own."""

    settings = ("device", "dtype", "batch_size", "kv_cache")

    def __init__(self, model: str = "smollm2-135m", device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 32, kv_cache: bool = True, loaded: tuple | None = None):
        """`loaded`: a (model, tokenizer, info) already in memory, such as a policy under training,
        whose current weights every call then uses."""
        self.model, tokenizer, info = loaded or models.load(model, device, dtype)
        super().__init__(info, tokenizer, batch_size)
        self.device = device
        self.kv_cache = kv_cache
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        if self.tokenizer.pad_token is None:  # scoring pads its batches
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._slots: dict[str, Slot] = {}
        self._turn_frame: tuple[list[int], str] | None = None

    # -- interface ---------------------------------------------------------------------------
    def encode(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def generate(self, requests: list[Request], sampling: Sampling, seed: int = 0) -> list[Completion]:
        start = time.perf_counter()
        generators = [torch.Generator(device=self.device).manual_seed(s)
                      for s in self.sample_seeds(requests, seed)]
        out: list[Completion] = []
        with torch.inference_mode(), grouped_attention(self.model):
            for i in range(0, len(requests), self.batch_size):
                out += self._generate_batch(requests[i:i + self.batch_size], sampling,
                                            generators[i:i + self.batch_size])
        self.usage.generate_calls += 1
        self.usage.seconds += time.perf_counter() - start
        return out

    def logprobs(self, texts: list[str]) -> list[list[float]]:
        ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        return [row.tolist() for row in self._token_logprobs(ids)]

    def loglikelihood(self, choices: list[Choice]) -> list[list[tuple[float, int]]]:
        """Each context is encoded once, on top of its cache slot's common prefix (a dialogue agent's
        slot already holds its memory), and its continuations are scored together in one forward
        pass over those keys/values, one right-padded row each: causal attention keeps padding
        out of every real position, so no mask is needed."""
        adapters = [c.adapter for c in choices]
        if any(adapters) and not all(adapters):
            raise ValueError("a batch names an adapter for some choices only")
        start = time.perf_counter()
        with torch.inference_mode():
            if not any(adapters):
                out = [self._score_choice(c) for c in choices]
            else:
                answering = RowAdapters(self.model)
                with answering.installed():
                    out = [self._score_choice(c, answering) for c in choices]
        self.usage.seconds += time.perf_counter() - start
        return out

    def _score_choice(self, choice: Choice, answering: RowAdapters | None = None) -> list[tuple[float, int]]:
        text = self.tokenizer.apply_chat_template(choice.messages, tokenize=False, add_generation_prompt=True)
        context = self.tokenizer(text + choice.prefix, add_special_tokens=False).input_ids
        continuations = [self.tokenizer(c, add_special_tokens=False).input_ids for c in choice.continuations]
        if not all(continuations):
            raise ValueError(f"an empty continuation among {choice.continuations!r}")
        slot = self._slots.get(choice.cache_key) if self.kv_cache and choice.cache_key else None
        cached = min(common_prefix(slot.ids, context), len(context) - 1) if slot else 0
        if answering:
            answering.rows([choice.adapter])
        slot = self._prefill(context, slot, cached)
        rows = [[context[-1]] + c[:-1] for c in continuations]
        width = max(map(len, rows))
        ids = torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows], device=self.device)
        past, n = None, len(context) - 1
        if n:  # the slot may hold more than the context (its own turn's end): only the context is read
            past = DynamicCache([(k[:, :, :n].expand(len(rows), -1, -1, -1), v[:, :, :n].expand(len(rows), -1, -1, -1))
                                 for k, v in slot.kv])
        if answering:
            answering.rows([choice.adapter] * len(rows))
        positions = torch.arange(n, n + width, device=self.device)
        logits = self.model(input_ids=ids, position_ids=positions.expand(len(rows), -1), cache=past,
                            use_cache=past is not None).logits
        logprobs = torch.log_softmax(logits.float(), -1)
        scored = []
        for r, c in enumerate(continuations):
            target = torch.tensor(c, device=self.device)
            scored.append((logprobs[r, :len(c)].gather(-1, target.unsqueeze(-1)).sum().item(), len(c)))
        self.usage.requests += 1
        self.usage.prompt_tokens += len(context)
        self.usage.cached_tokens += cached
        self.usage.scored_tokens += sum(map(len, continuations))
        return scored

    def turn_nll(self, texts: list[str]) -> list[float]:
        turns = [self._turn_ids(t) for t in texts]
        logprobs = self._token_logprobs([ids for ids, _ in turns])
        return [-lp[start - 1:].mean().item() for (_, start), lp in zip(turns, logprobs)]

    def _turn_ids(self, text: str) -> tuple[list[int], int]:
        """The text as one assistant message in the chat format, and where its content starts:
        the header is context; the content and the end-of-turn tokens are scored."""
        if self._turn_frame is None:
            head, tail = turn_frame(self.tokenizer)
            self._turn_frame = (self.tokenizer(head, add_special_tokens=False).input_ids, tail)
        head_ids, tail = self._turn_frame
        return head_ids + self.tokenizer(text + tail, add_special_tokens=False).input_ids, len(head_ids)

    def _token_logprobs(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Log-probability of every token after the first, batched by similar length."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out: list[torch.Tensor | None] = [None] * len(sequences)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for i in range(0, len(order), self.batch_size):
                chunk = order[i:i + self.batch_size]
                width = max(len(sequences[j]) for j in chunk)
                ids = torch.tensor([sequences[j] + [pad] * (width - len(sequences[j])) for j in chunk])
                mask = torch.tensor([[1] * len(sequences[j]) + [0] * (width - len(sequences[j])) for j in chunk])
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:].to(self.device).unsqueeze(-1))
                for row, j in enumerate(chunk):
                    out[j] = lp[row, : len(sequences[j]) - 1, 0].cpu()
                self.usage.scored_tokens += int(mask.sum())
        return out

    def keep(self, cache_key: str, ids: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Start slot `cache_key` from keys/values of `ids` computed elsewhere with this model's
        weights (per layer, each (1, kv_heads, len(ids), head_dim)); a request on the slot reuses
        them up to its common prefix with `ids`. (The HF engine's own: the influence fast path
        starts the dialogues it decodes from the keys/values its checks computed.)"""
        self._slots[cache_key] = Slot(list(ids), kv)

    def release(self, cache_key_prefix: str) -> None:
        for key in [k for k in self._slots if k.startswith(cache_key_prefix)]:
            del self._slots[key]

    # -- generation --------------------------------------------------------------------------
    def _generate_batch(self, requests: list[Request], sampling: Sampling, generators) -> list[Completion]:
        adapters = [r.adapter for r in requests]
        if any(adapters) and not all(adapters):
            raise ValueError("a batch names an adapter for some requests only")
        if not adapters[0]:
            return self._decode(requests, sampling, generators)
        answering = RowAdapters(self.model)
        with answering.installed():
            return self._decode(requests, sampling, generators, answering)

    def _decode(self, requests: list[Request], sampling: Sampling, generators: list[torch.Generator],
                answering: RowAdapters | None = None) -> list[Completion]:
        prompts = [self.encode(r.messages) for r in requests]
        slots = [self._slots.get(r.cache_key) if self.kv_cache and r.cache_key else None for r in requests]
        # At least one prompt token is always encoded: its logits start the completion.
        cached = [min(common_prefix(s.ids, ids), len(ids) - 1) if s else 0 for s, ids in zip(slots, prompts)]
        # Each row's new prompt tokens but the last are encoded alone, unpadded: a padded batch of
        # 600-1,400-token prompts wastes a third of its work on padding and materialises a
        # quadratic mask. The batch then starts from one token a row.
        for i, (ids, p) in enumerate(zip(prompts, cached)):
            if answering:
                answering.rows([requests[i].adapter])
            slots[i] = self._prefill(ids, slots[i], p)
        reuse = [len(ids) - 1 for ids in prompts]
        batch, past_len = len(requests), max(reuse)
        mask = torch.zeros(batch, past_len, dtype=torch.long)
        for b, p in enumerate(reuse):
            mask[b, past_len - p:] = 1
        lookahead = sampling.lookahead if sampling.temperature <= 0 else 0
        cache = padded_cache(slots, reuse, past_len, sampling.max_new_tokens + 1 + lookahead)

        rows = list(range(batch))  # batch row -> request index, shrinks as requests finish
        last = [ids[-1] for ids in prompts]  # each row's token to feed next
        pos = torch.tensor(reuse)  # and its position
        generated: list[list[int]] = [[] for _ in requests]
        texts = [""] * batch
        finish: list[str | None] = [None] * batch
        while True:
            # Guessed tokens ride behind each row's token; a guess the model rejects stays in the cache
            # with its mask column off (padding inside a row, as the left padding before it).
            room = [sampling.max_new_tokens - len(generated[r]) - 1 for r in rows]
            guesses = [lookup(prompts[r] + generated[r], min(lookahead, n)) if lookahead else []
                       for r, n in zip(rows, room)]
            width = max(map(len, guesses))
            step_ids = torch.tensor([[t] + g + [t] * (width - len(g)) for t, g in zip(last, guesses)])
            mask = torch.cat([mask, torch.ones(len(rows), 1 + width, dtype=torch.long)], dim=1)
            if answering:
                answering.rows([requests[r].adapter for r in rows])
            result = self.model(input_ids=step_ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=(pos.unsqueeze(1) + torch.arange(1 + width)).to(self.device),
                                cache=cache, use_cache=True)
            cache = result.cache
            if width:
                picked, gaps = top_two(result.logits)
            else:
                picked = pick(result.logits[:, -1].float(), sampling,
                              [generators[r] for r in rows]).unsqueeze(1).tolist()
            keep = []
            for j, r in enumerate(rows):
                g, out = guesses[j], picked[j]
                accepted = 0
                while accepted < len(g) and g[accepted] == out[accepted]:
                    accepted += 1
                used = 0  # tokens taken from `out`: the accepted guesses' and the one after them
                for t in out[:accepted + 1]:
                    used += 1
                    if t in self.eos_ids:
                        finish[r] = "stop"
                        break
                    generated[r].append(t)
                    if sampling.stop:
                        texts[r] = self.tokenizer.decode(generated[r], skip_special_tokens=True)
                        if any(s in texts[r] for s in sampling.stop):
                            finish[r] = "stop"
                    if finish[r] is None and len(generated[r]) >= sampling.max_new_tokens:
                        finish[r] = "length"
                    if finish[r] is not None:
                        break
                mask[j, mask.shape[1] - width + used - 1:] = 0  # the guesses fed but not taken
                self.usage.guessed_tokens += min(accepted, used)
                if width:  # picked from a pass over several positions, not one: near-ties could pick otherwise
                    self.usage.guess_near_ties += sum(gap < NEAR_TIE for gap in gaps[j][:used])
                pos[j] += used
                last[j] = t
                if finish[r] is None:
                    keep.append(j)
                elif requests[r].cache_key and self.kv_cache:
                    # The token just sampled was never fed to the model, so it is not in the cache
                    # (unless it was the end of turn, which is not kept in `generated` either).
                    fed = generated[r] if t in self.eos_ids else generated[r][:-1]
                    self._slots[requests[r].cache_key] = row_slot(prompts[r] + fed, cache, mask, j)
            if not keep:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep)
                cache.batch_select_indices(index.to(self.device))
                mask, pos = mask[index], pos[index]
                last = [last[j] for j in keep]
                rows = [rows[j] for j in keep]

        completions = []
        for r, ids in enumerate(prompts):
            text = self.tokenizer.decode(generated[r], skip_special_tokens=True)
            for s in sampling.stop:
                text = text.split(s, 1)[0]
            completions.append(Completion(text, len(ids), len(generated[r]), finish[r], cached[r],
                                          tuple(generated[r])))
            self.usage.requests += 1
            self.usage.prompt_tokens += len(ids)
            self.usage.cached_tokens += cached[r]
            self.usage.completion_tokens += len(generated[r])
        return completions

    def _prefill(self, ids: list[int], slot: Slot | None, cached: int) -> Slot | None:
        """A slot holding `ids[:-1]`: the first `cached` tokens' keys/values from `slot`, the rest
        encoded now in one unpadded forward pass."""
        if len(ids) - 1 <= cached:
            return slot
        # Full-length layers, whatever the model's: a sliding-window model (Gemma 3) gets its window
        # from the attention masks, where its own sliding layers fail past the window on a prefill.
        past = DynamicCache() if not cached else DynamicCache(
            [(k[:, :, :cached], v[:, :, :cached]) for k, v in slot.kv])
        new = torch.tensor([ids[cached:-1]], device=self.device)
        positions = torch.arange(cached, len(ids) - 1, device=self.device).unsqueeze(0)
        # Only the keys/values are wanted (the last prompt token's logits come from the first step):
        # logits of every position would be 0.5 s of SmolLM2's 49k-word head on a 1,100-token prompt.
        cache = self.model(input_ids=new, position_ids=positions, cache=past, use_cache=True,
                           logits_to_keep=1).cache
        return Slot(ids[:-1], [(layer.keys, layer.values) for layer in cache.layers])
