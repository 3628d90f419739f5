"""The fast path: the reference path's F(theta') with far fewer decoding steps. Under greedy decoding
theta*'s validation dialogues are a draft of every theta'. A policy that, fed a draft turn whole,
predicts each token theta* generated and then its end of turn would have generated that turn itself;
so one forward pass per agent checks a whole dialogue (as speculative decoding checks a draft), a
dialogue that holds is theta*'s, and only the others are decoded, from the first turn theta' would
say differently. The checks run on a plain copy of the model with theta' merged into its weights,
each agent's opening (its instructions, alike in every dialogue) encoded once per unit and attended
to beside a causal pass over the rest; the unit's step encodes each pair's prompt once for both
responses; the dialogues that diverge start from the keys/values their checks computed (the HF
engine's `keep`) and decode several tokens a step where their own text guesses them right (prompt
lookup, each guess checked as the drafts are).

The one difference from the reference is floating point: a check reads logits computed over the
whole sequence (on merged weights) where decoding computes them a token at a time, so an argmax
within a near-tie can differ; the checked positions within one are counted, as are tokens decoded
within one in steps that fed guesses.
"""

from __future__ import annotations

import copy
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from harness import models
from harness.backends.attention import CAUSAL_AFTER_CACHE
from harness.backends.decoding import NEAR_TIE, top_two
from harness.backends.hf import HFBackend
from harness.backends.kv_cache import common_prefix
from harness.config import SelectConfig
from harness.dits.influence.record import closing_turn
from harness.dits.influence.reference_path import ReferencePath
from harness.mas.dialogue import start


@dataclass
class DraftTurn:
    """One turn of a draft dialogue as the backend saw it: the agent's prompt and what it generated."""

    prompt: list[int]
    tokens: list[int]  # end of turn excluded
    ended: bool  # by an end-of-turn token; else at the utterance token cap

    @property
    def sequence(self) -> list[int]:
        return self.prompt + self.tokens

    def positions(self) -> range:
        """The positions whose next-token prediction must be this turn's: each generated token, then
        the end of turn (a capped turn has none: the cap, not the model, ended it)."""
        return range(len(self.prompt) - 1, len(self.prompt) + len(self.tokens) - (0 if self.ended else 1))


class _DraftRecorder:
    """A backend that keeps each request's prompt tokens and generated tokens, by cache slot in turn
    order (the dialogue loop names a slot per dialogue and agent). It records the policy's turns only:
    `estimator.prepare` keeps rosters with frozen speakers off this path."""

    def __init__(self, backend: HFBackend):
        self.backend = backend
        self.turns: dict[str, list[DraftTurn]] = defaultdict(list)

    def generate(self, requests, sampling, seed=0):
        # Dialogues set no stop strings, so "stop" means an end-of-turn token.
        out = self.backend.generate(requests, sampling, seed)
        for r, c in zip(requests, out):
            self.turns[r.cache_key].append(DraftTurn(self.backend.encode(r.messages), list(c.token_ids),
                                                     c.finish_reason == "stop"))
        return out

    def __getattr__(self, name):
        return getattr(self.backend, name)


def chains(turns: list[DraftTurn]) -> list[tuple[list[int], list[int]]]:
    """One agent's turns grouped so that one forward pass checks each group: a turn joins the group
    before it when that group's sequence is a prefix of its own (its memory re-encodes the earlier
    turns token for token, as chat templates usually do). (sequence, turn indices) per group."""
    groups: list[tuple[list[int], list[int]]] = []
    for i, turn in enumerate(turns):
        seq = turn.sequence
        if groups and seq[:len(groups[-1][0])] == groups[-1][0]:
            groups[-1] = (seq, groups[-1][1] + [i])
        else:
            groups.append((seq, [i]))
    return groups


class FastPath(ReferencePath):
    """The reference path's influence, checking theta*'s validation dialogues as a draft of each
    unit's instead of decoding them again (see the module's docstring). The dialogues that diverge,
    from all the units of a group, then decode in one batch, each row on its own unit's LoRA weights
    (the backend's per-row adapters)."""

    name = "fast"  # `influence.path` and `Estimate.path`

    def __init__(self, pairs, cfg: SelectConfig, task, policy: str, validation, key: str = ""):
        from peft.tuners.lora import LoraLayer

        super().__init__(pairs, cfg, task, policy, validation, key)
        # The checks run on a plain copy of the policy with the unit's LoRA weights merged in: no
        # adapter branch beside every linear layer (a tenth of a forward pass at r = 32).
        self.checker = models.load(policy, cfg.device, cfg.dtype)[0].requires_grad_(False)
        self.checker_device = next(self.checker.parameters()).device
        self.checker.set_attn_implementation(CAUSAL_AFTER_CACHE)  # checks start after a cached opening
        targets = dict(self.checker.named_modules())
        # (the policy's LoRA layer, the checker's linear layer it merges into)
        self.lora_layers = [(m, targets[name.removeprefix("base_model.model.")])
                            for name, m in self.model.named_modules() if isinstance(m, LoraLayer)]
        self.account = {"verified_dialogues": 0, "decoded_dialogues": 0, "decoded_turns": 0, "draft_turns": 0,
                        "checked_positions": 0, "near_ties": 0, "encoded_tokens": 0, "opening_tokens": 0,
                        "check_seconds": 0.0, "decode_seconds": 0.0}

    def theta_star_dialogues(self):
        recorder = _DraftRecorder(self.backend)
        self.draft = self.dialogues(backend=recorder)
        n = len(self.roster.agents)  # agents speak round robin: turn t is agent t % n's (t // n)th
        self.draft_turns = [[recorder.turns[d.cache_key(d.roster.speaker(t))][t // n]
                             for t in range(len(d.utterances))] for d in self.draft]
        # Each agent's prompts open alike in every dialogue (its instructions: 50-190 tokens), so each
        # unit encodes that opening once per agent; it ends before any position a check reads.
        self.openings = []
        for agent in range(n):
            own = [t for turns in self.draft_turns for t in turns[agent::n]]
            if not own:
                self.openings.append([])
                continue
            length = min(min(len(t.prompt) for t in own) - 1,
                         *(common_prefix(own[0].sequence, t.sequence) for t in own))
            self.openings.append(own[0].sequence[:length])
        return self.draft

    def unit_logps(self, indices) -> torch.Tensor:
        return self.shared_logps(indices)

    def unit_scores(self, theta_star, units, eta: float, answers_before, desc: str | None = None, between=None):
        scored = []
        bar = tqdm(total=len(units), desc=desc, disable=desc is None, unit="unit", file=sys.stderr,
                   dynamic_ncols=True)
        group_size = self.cfg.influence.decode_units
        for lo in range(0, len(units), group_size):
            outcomes, diverged = [], []
            for j, unit in enumerate(units[lo:lo + group_size]):
                self.step_from(theta_star, unit, eta)
                started = time.perf_counter()
                dialogues, resumed = self.check_drafts()
                if resumed:
                    name = f"unit{j}"
                    self.keep_adapter(name)
                    for d in resumed:
                        d.adapter = name
                outcomes.append(dialogues)
                diverged += resumed
                self.unit_seconds["validation"] += time.perf_counter() - started
                bar.update(1)  # checked; its diverged dialogues decode with the group's
                if between:
                    between(lo + j)
            started = time.perf_counter()
            if diverged:
                bar.set_postfix_str(f"decoding {len(diverged)} diverged dialogues")
                done = [len(d.utterances) for d in diverged]
                ties = self.backend.usage.guess_near_ties
                self.dialogues(dialogues=diverged, lookahead=self.cfg.influence.decode_lookahead)
                self.account["near_ties"] += self.backend.usage.guess_near_ties - ties
                self.account["decoded_dialogues"] += len(diverged)
                self.account["decoded_turns"] += sum(len(d.utterances) - n for d, n in zip(diverged, done))
            seconds = time.perf_counter() - started
            self.account["decode_seconds"] += seconds
            self.unit_seconds["validation"] += seconds
            for dialogues in outcomes:
                f, answers, items = self.score(dialogues)
                scored.append((f, sum(a != b for a, b in zip(answers, answers_before)), items))
            bar.set_postfix_str("")
        bar.close()
        return scored

    def check_drafts(self):
        """The validation dialogues of the current weights: theta*'s where the draft holds, and those
        that diverge restarted at the turn they diverge (to decode). (all dialogues, restarted ones)"""
        started = time.perf_counter()
        self.merge()
        self.opening_kv = [self.encode_opening(ids) for ids in self.openings]
        outcome, resumed = [], []
        for d, turns in zip(self.draft, self.draft_turns):
            k, computed = self.divergence(turns)
            self.account["draft_turns"] += len(turns)
            if k is None:
                self.account["verified_dialogues"] += 1
                outcome.append(d)
                continue
            again = start([d.question], self.roster)[0]
            for u in d.utterances[:k]:  # theta' says these turns as theta* did
                again.add(u, self.cfg.max_turns, closing_turn(self.pairs))
            # The checks computed the agents' keys/values up to the divergence and past it: decoding
            # reuses them where its prompts agree (the diverging agent's whole prompt at that turn),
            # rounded as the checker's merged weights round.
            for agent, (ids, kv) in computed.items():
                self.backend.keep(again.cache_key(agent), ids, kv)
            outcome.append(again)
            resumed.append(again)
        self.dialogues_run += len(self.validation)
        self.account["check_seconds"] += time.perf_counter() - started
        return outcome, resumed

    @torch.no_grad()
    def keep_adapter(self, name: str) -> None:
        """A copy of the current LoRA weights as adapter `name`, for a decoding batch to name per row."""
        if name not in self.model.peft_config:
            # The "default" adapter stays the active, trainable one.
            self.model.add_adapter(name, copy.deepcopy(self.model.peft_config["default"]))
        for layer, _ in self.lora_layers:
            layer.lora_A[name].weight.copy_(layer.lora_A["default"].weight)
            layer.lora_B[name].weight.copy_(layer.lora_B["default"].weight)

    @torch.no_grad()
    def divergence(self, turns: list[DraftTurn]) -> tuple[int | None, dict]:
        """The first turn the current weights would not generate as theta* did, or None; and per
        agent, the last sequence checked and its keys/values (`check`)."""
        first, computed, n = None, {}, len(self.roster.agents)
        for agent in range(n):
            own = list(range(agent, len(turns), n))
            for sequence, members in chains([turns[t] for t in own]):
                if first is not None and own[members[0]] >= first:
                    break
                failed, computed[agent] = self.check(agent, sequence, [turns[own[m]] for m in members])
                if failed is not None:
                    t = own[members[failed]]
                    first = t if first is None else min(first, t)
                    break
        return first, computed

    @torch.no_grad()
    def merge(self) -> None:
        """The checker's weights: the policy's base weights plus the current LoRA update."""
        for layer, target in self.lora_layers:
            torch.addmm(layer.base_layer.weight, layer.lora_B["default"].weight, layer.lora_A["default"].weight,
                        alpha=layer.scaling["default"], out=target.weight)

    def count_encoded(self, tokens: int) -> None:
        self.backend.usage.scored_tokens += tokens
        self.account["encoded_tokens"] += tokens

    @torch.no_grad()
    def encode_opening(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The checker's keys/values of an agent's opening tokens."""
        if not ids:
            return []
        self.count_encoded(len(ids))
        device = self.checker_device
        cache = self.checker(input_ids=torch.tensor([ids], device=device), use_cache=True).cache
        return [(layer.keys, layer.values) for layer in cache.layers]

    def check(self, agent: int, sequence: list[int], turns: list[DraftTurn]) -> tuple[int | None, tuple]:
        """One forward pass over `sequence` (after the agent's opening, encoded once per unit): the
        index of the first of `turns` (all prefixes of it) whose tokens or end of turn the current
        weights would not generate, or None; and (sequence, its keys/values per layer)."""
        positions = [p for turn in turns for p in turn.positions()]
        owner = [i for i, turn in enumerate(turns) for _ in turn.positions()]  # the turn of each position
        eos = -1  # any of the backend's end-of-turn tokens
        targets = [tok for turn in turns for tok in turn.tokens + ([eos] if turn.ended else [])]
        device = self.checker_device
        n = len(self.openings[agent])
        self.count_encoded(len(sequence) - n)
        self.account["opening_tokens"] += n
        out = self.checker(input_ids=torch.tensor([sequence[n:]], device=device),
                           position_ids=torch.arange(n, len(sequence), device=device).unsqueeze(0),
                           cache=DynamicCache(self.opening_kv[agent]) if n else None,
                           logits_to_keep=torch.tensor(positions, device=device) - n, use_cache=True)
        computed = (sequence, [(layer.keys, layer.values) for layer in out.cache.layers])
        picked, gaps = top_two(out.logits[0])
        ok = [p == t if t != eos else p in self.backend.eos_ids for p, t in zip(picked, targets)]
        bad = ok.index(False) if False in ok else len(ok)
        self.account["checked_positions"] += bad
        self.account["near_ties"] += sum(g < NEAR_TIE for g in gaps[:bad])
        return (None if bad == len(ok) else owner[bad]), computed

