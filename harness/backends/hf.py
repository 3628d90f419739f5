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
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from harness import models
from harness.backends.base import Backend, Choice, Completion, Request, Sampling, Usage


@dataclass
class _Slot:
    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, each (1, kv_heads, len(ids), head_dim)


class _RoomyLayer(DynamicLayer):
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


class _RowAdapters:
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


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class HFBackend(Backend):
    def __init__(self, model: str = "smollm2-135m", device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 32, kv_cache: bool = True, loaded: tuple | None = None):
        """`loaded`: a (model, tokenizer, info) already in memory, such as a policy under training,
        whose current weights every call then uses."""
        self.model, self.tokenizer, self.model_info = loaded or models.load(model, device, dtype)
        self.device = device
        self.batch_size = batch_size
        self.kv_cache = kv_cache
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        if self.tokenizer.pad_token is None:  # `logprobs` pads its batches
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._slots: dict[str, _Slot] = {}
        self._turn_frame: tuple[list[int], str] | None = None
        self.usage = Usage()

    # -- interface ---------------------------------------------------------------------------
    def encode(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def generate(self, requests: list[Request], sampling: Sampling, seed: int = 0) -> list[Completion]:
        start = time.perf_counter()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out: list[Completion] = []
        with torch.inference_mode(), grouped_attention(self.model):
            for i in range(0, len(requests), self.batch_size):
                out += self._generate_batch(requests[i:i + self.batch_size], sampling, generator)
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
                answering = _RowAdapters(self.model)
                with answering.installed():
                    out = [self._score_choice(c, answering) for c in choices]
        self.usage.seconds += time.perf_counter() - start
        return out

    def _score_choice(self, choice: Choice, answering: _RowAdapters | None = None) -> list[tuple[float, int]]:
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
            from transformers import DynamicCache

            past = DynamicCache([(k[:, :, :n].expand(len(rows), -1, -1, -1), v[:, :, :n].expand(len(rows), -1, -1, -1))
                                 for k, v in slot.kv])
        if answering:
            answering.rows([choice.adapter] * len(rows))
        positions = torch.arange(n, n + width, device=self.device)
        logits = self.model(input_ids=ids, position_ids=positions.expand(len(rows), -1), past_key_values=past,
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
            marker = "\x00"
            rendered = self.tokenizer.apply_chat_template([{"role": "assistant", "content": marker}], tokenize=False)
            head, tail = rendered.split(marker, 1)
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
        them up to its common prefix with `ids`."""
        self._slots[cache_key] = _Slot(list(ids), kv)

    def release(self, cache_key_prefix: str) -> None:
        for key in [k for k in self._slots if k.startswith(cache_key_prefix)]:
            del self._slots[key]

    # -- generation --------------------------------------------------------------------------
    def _generate_batch(self, requests: list[Request], sampling: Sampling, generator) -> list[Completion]:
        adapters = [r.adapter for r in requests]
        if any(adapters) and not all(adapters):
            raise ValueError("a batch names an adapter for some requests only")
        if not adapters[0]:
            return self._decode(requests, sampling, generator)
        answering = _RowAdapters(self.model)
        with answering.installed():
            return self._decode(requests, sampling, generator, answering)

    def _decode(self, requests: list[Request], sampling: Sampling, generator,
                answering: _RowAdapters | None = None) -> list[Completion]:
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
        cache = self._padded_cache(slots, reuse, past_len, sampling.max_new_tokens + 1 + lookahead)

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
                                past_key_values=cache, use_cache=True)
            cache = result.past_key_values
            if width:
                picked, gaps = top_two(result.logits)
            else:
                picked = self._pick(result.logits[:, -1].float(), sampling, generator).unsqueeze(1).tolist()
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
                    self._store(requests[r].cache_key, prompts[r], generated[r], cache, mask, j,
                                fed_all=t in self.eos_ids)
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

    def _prefill(self, ids: list[int], slot: _Slot | None, cached: int) -> _Slot | None:
        """A slot holding `ids[:-1]`: the first `cached` tokens' keys/values from `slot`, the rest
        encoded now in one unpadded forward pass."""
        from transformers import DynamicCache

        if len(ids) - 1 <= cached:
            return slot
        past = DynamicCache(config=self.model.config) if not cached else DynamicCache(
            [(k[:, :, :cached], v[:, :, :cached]) for k, v in slot.kv])
        new = torch.tensor([ids[cached:-1]], device=self.device)
        positions = torch.arange(cached, len(ids) - 1, device=self.device).unsqueeze(0)
        # Only the keys/values are wanted (the last prompt token's logits come from the first step):
        # logits of every position would be 0.5 s of SmolLM2's 49k-word head on a 1,100-token prompt.
        cache = self.model(input_ids=new, position_ids=positions, past_key_values=past, use_cache=True,
                           logits_to_keep=1).past_key_values
        return _Slot(ids[:-1], [(layer.keys, layer.values) for layer in cache.layers])

    def _padded_cache(self, slots, reuse, past_len, room):
        """The slots' keys/values left-padded to `past_len`, in buffers with `room` more columns."""
        from transformers import Cache, DynamicCache

        if past_len == 0:
            return DynamicCache(config=self.model.config)
        template = next(s.kv for s, p in zip(slots, reuse) if p)
        layers = []
        for layer, (k0, v0) in enumerate(template):
            k = k0.new_zeros(len(slots), k0.shape[1], past_len + room, k0.shape[3])
            v = v0.new_zeros(len(slots), v0.shape[1], past_len + room, v0.shape[3])
            for b, (slot, p) in enumerate(zip(slots, reuse)):
                if p:
                    k[b, :, past_len - p:past_len] = slot.kv[layer][0][0, :, :p]
                    v[b, :, past_len - p:past_len] = slot.kv[layer][1][0, :, :p]
            layers.append(_RoomyLayer(k, v, past_len))
        return Cache(layers=layers)

    def _store(self, key, prompt, generated, cache, mask, row, fed_all):
        """Keep the row's keys/values, padding removed, for the slot's next request. The token
        just sampled was never fed to the model, so it is not in the cache (unless it was the end
        of turn, which is not kept in `generated` either)."""
        ids = prompt + (generated if fed_all else generated[:-1])
        columns = mask[row].nonzero().squeeze(1).to(self.device)
        assert len(columns) == len(ids), (len(columns), len(ids))
        self._slots[key] = _Slot(ids, [
            (layer.keys[row:row + 1].index_select(2, columns), layer.values[row:row + 1].index_select(2, columns))
            for layer in cache.layers
        ])

    @staticmethod
    def _pick(logits: torch.Tensor, sampling: Sampling, generator) -> torch.Tensor:
        if sampling.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / sampling.temperature, -1)
        if sampling.top_p < 1.0:
            sorted_probs, order = probs.sort(-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
