"""Certificates that a unit's step leaves one of theta*'s validation dialogues as it was, so the fast
path need not check it.

A draft dialogue holds under theta' = theta* + delta when, at every position its checks read, the
drafted token's logit stays above every other token's (where the turn ended, theta*'s best
end-of-turn token above every other token), and in answer_mode=choice, at every utterance, the chosen
option's log-likelihood stays above every other option's (then the answers, and so where the dialogue
ends, are theta*'s too). Each condition is a margin between two scores, m = a - b > 0 at theta*; to
first order a step moves it by g . delta, g its gradient w.r.t. the LoRA parameters at theta*.

The margins of a dialogue are its (position, rival) pairs, the drafted token against each of its k+1
strongest rivals at every position, and its (option, rival option) pairs. The k smallest get their
gradients once, at theta* (a backward pass each); the (k+1)-th smallest, m_next, is below every other
margin of the dialogue, those of rivals not taken included (each trails the k+1 taken at its
position). A unit's step is delta = -eta * d, d the optimizer's first-step direction of the unit's
gradient (`STEP_DIRECTIONS`), known before any check; each computed gradient is dotted with each
unit's d once. The dialogue is certified for the unit when

- every computed margin exceeds both NEAR_TIE and safety * eta * |g_i . d|, and
- m_next exceeds safety * eta * min(G1 ||d||_inf, G2 ||d||_2), which bounds |g . delta| of any margin
  whose gradient was not computed if its L1 norm is at most G1 and its L2 norm at most G2 (Hoelder,
  Cauchy-Schwarz).

Sound to first order, given G1 and G2: they are the largest norms among the computed gradients (the
smallest margins'), an estimate of the rest's, not a bound on them. What first order and that
estimate miss is what `safety` covers, and what the audit measures: every unit re-checks a seeded
share of its certified dialogues exactly (`audit_sample`) and the fast path counts those that changed.

The bound on the rest grows with eta * G1 (Adam's first step moves every parameter by about eta): at
a large eta it exceeds every m_next and nothing is certified. The precomputation then stops after one
gradient (`add_units`); its cost is one forward pass per checked chain at theta* (about one unit's
checks) for the margins, and where certificates are in reach a forward and k backward passes per
dialogue, once per estimate; a certified dialogue saves its checks (and option scoring) in every unit.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from harness.backends.base import Choice
from harness.backends.decoding import NEAR_TIE
from harness.dits.influence.choice_rescore import choice_ids
from harness.screen.dpo import EncodedPair, shared_prompt_logps
from harness.screen.first_order import STEP_DIRECTIONS
from harness.screen.surrogate import memory_before


@dataclass(frozen=True)
class Margin:
    """One margin of a dialogue at theta*: on a chain's position (`chain`: (agent, index), `at`: the
    position's index among the chain's checked ones; `better` a token, or -1 for the best end of
    turn) or on an utterance's options (`chain` None, `at`: the utterance; `better`, `worse` options)."""

    value: float
    chain: tuple[int, int] | None
    at: int
    better: int
    worse: int


class Certifier:
    """Certificates for theta*'s draft dialogues (see the module's docstring). `chains[d]` lists
    dialogue d's checked chains per agent as (sequence, draft turns); the model is the policy at theta*."""

    def __init__(self, model, tokenizer, params: list[torch.Tensor], eos_ids: set[int], draft, chains,
                 choice: bool, k: int, step_optimizer: str, safety: float, least_eta: float):
        """`least_eta`: the smallest rate any unit will step at (eta auto only grows it), below which
        a dialogue no step could certify gets no gradients."""
        self.model, self.tokenizer, self.params = model, tokenizer, params
        self.eos = sorted(eos_ids)
        self.draft, self.chains, self.k, self.safety, self.least_eta = draft, chains, k, safety, least_eta
        self.direction = STEP_DIRECTIONS[step_optimizer]
        self.device = params[0].device
        self.margins = [self.smallest(d, choice) for d in range(len(draft))]  # (k smallest, m_next) per dialogue
        self.norms = (0.0, 0.0)  # G1, G2: the largest norms of the margin gradients computed so far
        self.computed = 0  # margin gradients computed (the precomputation's size)
        # per unit: |g_i . d| per dialogue (None: no gradients, never certified), ||d||_inf, ||d||_2
        self.units: dict[tuple, tuple[list[torch.Tensor | None], float, float]] = {}

    @torch.no_grad()
    def smallest(self, d: int, choice: bool) -> tuple[list[Margin], float]:
        """Dialogue d's k smallest margins at theta* and the (k+1)-th (inf where there is none)."""
        found: list[Margin] = []
        for agent, own in enumerate(self.chains[d]):
            for index, (sequence, turns) in enumerate(own):
                positions, targets = checked(turns, self.device)
                if not positions:  # turns capped before their first token
                    continue
                logits = self.logits(sequence, positions)
                rivals = logits.clone()
                words = (targets >= 0).nonzero().squeeze(-1)
                rivals[words, targets[words]] = -math.inf
                ends = (targets < 0).nonzero()  # (rows, 1): broadcast against the end-of-turn columns
                rivals[ends, torch.tensor(self.eos, device=self.device)] = -math.inf
                top = rivals.topk(min(self.k + 1, rivals.shape[-1]), dim=-1)
                gaps = (self.drafted(logits, targets).unsqueeze(-1) - top.values).tolist()
                for at, (row, worse) in enumerate(zip(gaps, top.indices.tolist())):
                    found += [Margin(g, (agent, index), at, int(targets[at]), w) for g, w in zip(row, worse)]
        if choice:
            for t, u in enumerate(self.draft[d].utterances):
                if u.choice_logprobs is None:
                    continue
                scores = u.choice_logprobs
                b = scores.index(max(scores))  # `best_option`: the first listed among ties
                found += [Margin(scores[b] - s, None, t, b, j) for j, s in enumerate(scores) if j != b]
        found.sort(key=lambda m: m.value)
        return found[:self.k], (found[self.k].value if len(found) > self.k else math.inf)

    def logits(self, sequence: list[int], positions: list[int]) -> torch.Tensor:
        """The policy's logits (float) at `positions` of `sequence`, on its current weights."""
        out = self.model(input_ids=torch.tensor([sequence], device=self.device),
                         logits_to_keep=torch.tensor(positions, device=self.device))
        return out.logits[0].float()

    def drafted(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per row, the drafted token's logit (-1, the turn's end: the best end-of-turn token's)."""
        own = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return torch.where(targets < 0, logits[:, self.eos].max(-1).values, own)

    def add_units(self, keys: list[tuple], grads: torch.Tensor) -> None:
        """Each unit's direction (rows of `grads`: its flattened gradient at theta*) dotted with every
        computed margin gradient. The gradients are computed again for every call (not kept: V * k of
        them outweigh the units' own). A dialogue gets none where no unit's step could certify it:
        its smallest margin within a near-tie, or its m_next already below the bound on the rest at
        the least rate with the norms so far (they only grow, so the bound it fails only tightens).
        The dialogues go in order of m_next, largest first, and the first one's smallest margin
        alone first: where even it is out of reach (a large eta), one backward pass finds out."""
        directions = self.direction(grads)
        reach = [(d.abs().max().item(), d.norm().item()) for d in directions]
        dots: list[list[torch.Tensor | None]] = [[None] * len(self.margins) for _ in keys]
        for d in sorted(range(len(self.margins)), key=lambda d: -self.margins[d][1]):
            smallest, _ = self.margins[d]
            grads_d: list[torch.Tensor] = []
            for part in (smallest[:1], smallest[1:]) if not self.computed else (smallest,):
                if self.hopeless(d, reach):
                    break
                with torch.enable_grad():
                    grads_d += self.gradients(d, part)
                self.computed += len(part)
                for g in grads_d[-len(part):] if part else []:
                    self.norms = (max(self.norms[0], g.abs().sum().item()), max(self.norms[1], g.norm().item()))
            else:
                moved = torch.stack([directions @ g for g in grads_d]) if grads_d else torch.zeros(0, len(keys))
                for u, per_unit in enumerate(dots):
                    per_unit[d] = moved[:, u].abs()
        for key, per_unit, (inf_norm, l2_norm) in zip(keys, dots, reach):
            self.units[key] = (per_unit, inf_norm, l2_norm)

    def hopeless(self, d: int, reach: list[tuple[float, float]]) -> bool:
        """Whether no unit's step (of direction norms `reach`) at any rate from `least_eta` on could
        certify dialogue d, given the norms so far."""
        smallest, m_next = self.margins[d]
        rest = self.safety * self.least_eta * min(self.rest(*r) for r in reach)
        return bool(smallest and smallest[0].value <= NEAR_TIE) or (self.computed > 0 and m_next <= rest)

    def rest(self, inf_norm: float, l2_norm: float) -> float:
        """The bound on |g . d| of a margin whose gradient g was not computed (Hoelder, Cauchy-Schwarz)."""
        return min(self.norms[0] * inf_norm, self.norms[1] * l2_norm)

    def gradients(self, d: int, smallest: list[Margin]) -> list[torch.Tensor]:
        """The flattened gradient at theta* of each of dialogue d's margins `smallest`, in order."""
        margins: list = [None] * len(smallest)
        on_chain: dict[tuple[int, int], list[int]] = {}
        for i, m in enumerate(smallest):
            if m.chain is None:
                margins[i] = self.option_margin(self.draft[d], m)
            else:
                on_chain.setdefault(m.chain, []).append(i)
        for (agent, index), members in on_chain.items():
            sequence, turns = self.chains[d][agent][index]
            positions, targets = checked(turns, self.device)
            rows = [smallest[i].at for i in members]
            logits = self.logits(sequence, [positions[r] for r in rows])
            better = self.drafted(logits, targets[rows])
            for j, i in enumerate(members):
                margins[i] = better[j] - logits[j, smallest[i].worse]
        out = []
        for i, margin in enumerate(margins):
            grads = torch.autograd.grad(margin, self.params, retain_graph=i + 1 < len(margins), allow_unused=True)
            out.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(grads, self.params)]))
        return out

    def option_margin(self, dialogue, m: Margin) -> torch.Tensor:
        """log p(better option) - log p(worse option) after utterance m.at, scored as `choose` scores them."""
        u = dialogue.utterances[m.at]
        messages = memory_before(dialogue, m.at) + [{"role": "assistant", "content": u.text}]
        context, continuations = choice_ids(self.tokenizer, Choice(messages, dialogue.question.continuations,
                                                                   prefix=f"{u.speaker}:"))
        logps = shared_prompt_logps(self.model, [EncodedPair(context, continuations[m.better], continuations[m.worse])])
        return logps[0, 0] - logps[0, 1]

    def certified(self, key: tuple, eta: float) -> list[int]:
        """The dialogues certified unchanged by the step of unit `key` (`add_units`) at rate eta."""
        dots, inf_norm, l2_norm = self.units[key]
        rest = self.safety * eta * self.rest(inf_norm, l2_norm)
        out = []
        for d, ((smallest, m_next), moved) in enumerate(zip(self.margins, dots)):
            if moved is None or m_next <= rest:
                continue
            values = torch.tensor([m.value for m in smallest], device=self.device)
            if bool((values > torch.clamp(self.safety * eta * moved, min=NEAR_TIE)).all()):
                out.append(d)
        return out


def audit_sample(certified: list[int], share: float, seed: int, key: tuple) -> list[int]:
    """The certified dialogues a unit re-checks: a seeded share, at least one where share > 0."""
    if not certified or share <= 0:
        return []
    rng = random.Random(f"{seed}:{','.join(map(str, key))}")
    return sorted(rng.sample(certified, min(len(certified), math.ceil(share * len(certified)))))


def checked(turns, device) -> tuple[list[int], torch.Tensor]:
    """A chain's checked positions and the token drafted at each (-1: the turn's end), as `FastPath.check`
    reads them."""
    positions = [p for turn in turns for p in turn.positions()]
    targets = [tok for turn in turns for tok in turn.tokens + ([-1] if turn.ended else [])]
    return positions, torch.tensor(targets, device=device)
