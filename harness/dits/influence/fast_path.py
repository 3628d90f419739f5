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

In answer_mode=choice a step can move the option scores without changing a token, so the answers of
the turns that hold are scored again under the unit's weights (`choice_rescore`: every utterance's
options on its check's keys/values, a few forward passes a unit) and the dialogue replayed with them:
it may end sooner (its agents now agree), as theta*'s (then it is done), or run on past theta*'s end
(then it decodes on from there, as a diverged one).

All the units' gradients are taken first, from shared backward passes (`unit_steps`), and each unit's
step is its optimizer's on its gradient. Knowing the steps before any check, the path certifies the
drafts a step cannot change to first order (`certify`, `influence.certify`) and checks only the rest,
and a seeded share of the certified ones, whose changes are counted (`wrong_certifications`, target 0).

The one difference from the reference is floating point: a check reads logits computed over the
whole sequence (on merged weights) where decoding computes them a token at a time, so an argmax
within a near-tie can differ; the checked positions within one are counted, as are tokens decoded
within one in steps that fed guesses and the rescored utterances whose two best options are within
one. A wrong certificate outside the audit is the other (see `certify`).
"""

from __future__ import annotations

import copy
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from harness import models
from harness.backends.attention import CAUSAL_AFTER_CACHE
from harness.backends.decoding import NEAR_TIE, top_two
from harness.backends.hf import HFBackend
from harness.backends.kv_cache import common_prefix
from harness.config import SelectConfig
from harness.dits.influence.certify import Certifier, audit_sample
from harness.dits.influence.choice_rescore import ROWS_PER_PASS, TreeScorer
from harness.dits.influence.record import answer_mode, closing_turn
from harness.dits.influence.reference_path import STEP_OPTIMIZERS, ReferencePath
from harness.dits.influence.unit_steps import UnitGradients, apply_step
from harness.mas.dialogue import Dialogue, choose, start


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
        # verified: settled without decoding (their drafts held, or certified); draft_turns: the turns
        # of the drafts every unit's dialogues start from, checked or certified
        self.account = {"verified_dialogues": 0, "decoded_dialogues": 0, "decoded_turns": 0, "draft_turns": 0,
                        "checked_positions": 0, "near_ties": 0, "encoded_tokens": 0, "opening_tokens": 0,
                        "check_seconds": 0.0, "decode_seconds": 0.0,
                        # answer_mode=choice: utterances whose options were scored again, those whose answer
                        # moved, those within a near-tie (in near_ties too), the tokens and passes it took;
                        # dialogues that ended sooner than theta*'s, or ran on past its end (decoded)
                        "rescored_utterances": 0, "changed_choices": 0, "option_near_ties": 0,
                        "rescored_tokens": 0, "rescore_passes": 0, "rescore_seconds": 0.0,
                        "ended_sooner": 0, "ran_longer": 0,
                        # certification: dialogues certified, those audited and the audit's wrong ones,
                        # the margin gradients computed at theta* and the precomputation's seconds
                        "certified_dialogues": 0, "audited_dialogues": 0, "wrong_certifications": 0,
                        "certify_gradients": 0, "certify_seconds": 0.0}
        self.unit_seconds["certify"] = 0.0
        self.choice = answer_mode(pairs) == "choice"
        self.scorer = TreeScorer(self.checker, self.tokenizer, ROWS_PER_PASS, self.account)
        self.gradients = UnitGradients(self.model, self.params)
        self.unit_grads: dict[tuple, torch.Tensor] = {}  # per unit (its pairs), its flattened gradient at theta*
        self.certifier: Certifier | None = None

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

    def prepare_units(self, theta_star, units) -> None:
        """Every unit's gradient at theta* not taken yet, in shared passes (`unit_steps`), and with
        certification its margins' first-order moves (`certify`); both timed as the units' work."""
        new = [u for u in dict.fromkeys(map(tuple, units)) if u not in self.unit_grads]
        if not new:
            return
        inf = self.cfg.influence
        started = time.perf_counter()
        self.restore(theta_star)
        grads = self.gradients([list(u) for u in new], lambda pairs: self.pair_losses(pairs, self.unit_logps),
                               inf.micro_batch)
        self.unit_grads.update(zip(new, grads))
        self.unit_seconds["step"] += time.perf_counter() - started
        if not inf.certify:
            return
        started = time.perf_counter()
        if self.certifier is None:
            self.certifier = Certifier(self.model, self.tokenizer, self.params, self.backend.eos_ids, self.draft,
                                       self.draft_chains(), self.choice, inf.certify_margins, inf.step_optimizer,
                                       inf.certify_safety, inf.eta)
        self.certifier.add_units(new, grads)
        self.account["certify_gradients"] = self.certifier.computed
        seconds = time.perf_counter() - started
        self.unit_seconds["certify"] += seconds
        self.account["certify_seconds"] += seconds

    def draft_chains(self) -> list[list[list[tuple[list[int], list[DraftTurn]]]]]:
        """Per draft dialogue, per agent, the chains its checks read (`chains`): (sequence, turns)."""
        n = len(self.roster.agents)
        return [[[(sequence, [turns[agent::n][m] for m in members]) for sequence, members in chains(turns[agent::n])]
                 for agent in range(n)] for turns in self.draft_turns]

    def calibrate(self, theta_star, units, answers_before, items_before) -> tuple[float, list[dict]]:
        self.prepare_units(theta_star, units)  # all the units' gradients together, not the probe's first
        return super().calibrate(theta_star, units, answers_before, items_before)

    def unit_scores(self, theta_star, units, eta: float, answers_before, desc: str | None = None, between=None):
        inf = self.cfg.influence
        self.prepare_units(theta_star, units)
        scored = []
        bar = tqdm(total=len(units), desc=desc, disable=desc is None, unit="unit", file=sys.stderr,
                   dynamic_ncols=True)
        group_size = inf.decode_units
        for lo in range(0, len(units), group_size):
            outcomes, diverged = [], []
            for j, unit in enumerate(units[lo:lo + group_size]):
                key = tuple(unit)
                started = time.perf_counter()
                apply_step(self.params, theta_star, self.gradients.views(self.unit_grads[key]),
                           STEP_OPTIMIZERS[inf.step_optimizer], eta)
                self.unit_seconds["step"] += time.perf_counter() - started
                started = time.perf_counter()
                certified = self.certifier.certified(key, eta) if self.certifier else []
                dialogues, resumed = self.check_drafts(certified,
                                                       audit_sample(certified, inf.certify_audit, self.cfg.seed, key))
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
                self.dialogues(dialogues=diverged, lookahead=inf.decode_lookahead)
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

    def check_drafts(self, certified=(), audited=()):
        """The validation dialogues of the current weights: theta*'s where the draft holds (or is
        certified to: `certified`, but for those `audited`, which are checked), and those that
        diverge restarted at the turn they diverge (to decode). In answer_mode=choice the answers of
        the turns that hold are scored again and the dialogue replayed with them (`settle`).
        (all dialogues, restarted ones)"""
        started = time.perf_counter()
        self.merge()
        self.opening_kv = [self.encode_opening(ids) for ids in self.openings]
        skipped = set(certified) - set(audited)
        outcome: list = [None] * len(self.draft)
        resumed: set[int] = set()
        pending = []  # (dialogue index, turns that hold, checked chains): answers to score again
        for i, (d, turns) in enumerate(zip(self.draft, self.draft_turns)):
            self.account["draft_turns"] += len(turns)
            if i in skipped:
                outcome[i] = d
                continue
            first, computed = self.divergence(turns)
            if self.choice and d.question.options:
                for agent, held in computed.items():
                    for sequence, kv in held:
                        self.scorer.register(d.cache_key(agent), sequence, kv)
                pending.append((i, len(turns) if first is None else first, computed))
                if self.scorer.registered >= self.scorer.rows_per_pass:
                    self.rescore(pending, outcome, resumed)
                    pending = []
            elif first is None:
                outcome[i] = d
            else:
                outcome[i], again = self.settle(d, d.utterances[:first], computed)
                if again:
                    resumed.add(i)
        self.rescore(pending, outcome, resumed)
        changed = [i for i in audited if i in resumed or not same_dialogue(outcome[i], self.draft[i])]
        self.account["certified_dialogues"] += len(certified)
        self.account["audited_dialogues"] += len(audited)
        self.account["wrong_certifications"] += len(changed)
        self.account["verified_dialogues"] += len(self.draft) - len(resumed)
        self.dialogues_run += len(self.validation)
        self.account["check_seconds"] += time.perf_counter() - started
        return outcome, [outcome[i] for i in sorted(resumed)]

    def rescore(self, pending: list[tuple], outcome: list, resumed: set[int]) -> None:
        """The pending dialogues' held turns with their answers scored on the current weights, as the
        dialogue loop scores them (`choose`, with the tree scorer in the backend's place), each
        dialogue then settled with them."""
        if not pending:
            return
        started = time.perf_counter()
        before, agents, said, spans = [], [], [], []
        for i, held, _ in pending:
            d = self.draft[i]
            spans.append((len(said), len(said) + held))
            for t, u in enumerate(d.utterances[:held]):
                # the speaker's memory when it said utterance t, on the dialogue's cache slots
                before.append(Dialogue(d.question, d.systems, d.utterances[:t], key=d.key, roster=d.roster,
                                       closing=u.closing))
                agents.append(d.roster.speaker(t))
                said.append(replace(u))  # a copy: theta*'s draft keeps its answers
        choose(before, agents, said, self.scorer)
        self.scorer.clear()
        for (i, held, computed), (lo, hi) in zip(pending, spans):
            d, new = self.draft[i], said[lo:hi]
            for u, old in zip(new, d.utterances):
                top = sorted(u.choice_logprobs, reverse=True)[:2]
                tie = len(top) == 2 and top[0] - top[1] < NEAR_TIE
                self.account["option_near_ties"] += tie
                self.account["near_ties"] += tie
                self.account["changed_choices"] += u.answer != old.answer
            self.account["rescored_utterances"] += len(new)
            outcome[i], again = self.settle(d, new, computed)
            if again:
                resumed.add(i)
                self.account["ran_longer"] += held == len(d.utterances)
            elif len(outcome[i].utterances) < len(d.utterances):
                self.account["ended_sooner"] += 1
        self.account["rescore_seconds"] += time.perf_counter() - started

    def settle(self, d: Dialogue, said, computed: dict) -> tuple[Dialogue, bool]:
        """The dialogue of the current weights from theta*'s draft `d`: a new dialogue replaying `said`
        (the draft's turns the weights say alike, with the answers they give) until it ends, or to
        be decoded on from the first turn past them (or whose closing instruction differs: an answer
        moved); its slots then start from the checks' keys/values. (dialogue, to decode)"""
        again = start([d.question], self.roster)[0]
        for u in said:
            if again.closing != u.closing:
                break
            again.add(u, self.cfg.max_turns, closing_turn(self.pairs))
            if again.done:
                return again, False
        # The checks computed the agents' keys/values up to the divergence and past it: decoding
        # reuses them where its prompts agree (the diverging agent's whole prompt at that turn),
        # rounded as the checker's merged weights round.
        for agent, held in computed.items():
            ids, kv = held[-1]
            self.backend.keep(again.cache_key(agent), ids, kv)
        return again, True

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
        agent, the sequences checked and their keys/values (`check`), in turn order."""
        first, computed, n = None, {}, len(self.roster.agents)
        for agent in range(n):
            own = list(range(agent, len(turns), n))
            for sequence, members in chains([turns[t] for t in own]):
                if first is not None and own[members[0]] >= first:
                    break
                failed, checked = self.check(agent, sequence, [turns[own[m]] for m in members])
                computed.setdefault(agent, []).append(checked)
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


def same_dialogue(a: Dialogue, b: Dialogue) -> bool:
    """Whether two finished dialogues said the same and answered the same (an audit's test)."""
    return a.stop == b.stop and [(u.text, u.answer) for u in a.utterances] == [(u.text, u.answer) for u in b.utterances]
