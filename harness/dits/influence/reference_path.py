"""The reference path: faithful to the reference procedure (docs/reference-code.md §8.2-8.3)
and kept as the correctness oracle. A LoRA adapter is warmed up with DPO on the pool
(theta*); then, per unit, the adapter is restored to theta*, a fresh optimizer takes one step of the
DPO loss on the unit (theta'), and the V greedy validation dialogues run batched together on theta'.
F(theta*) is measured too, so I = (F(theta') - F(theta*)) / eta says whether a unit helps. The loss
ablation takes the validation DPO loss instead of F.

The policy trains in this process, so the path runs on the HF engine (`HFBackend` over the peft
model; `estimator.prepare` refuses another backend). The validation dialogues are those of the
config's roster (`roster`, `speaker_models`): the policy speaks for its agents with the unit's
weights, each frozen speaker with its own model, built apart from the policy so that no unit's
step reaches it.
"""

from __future__ import annotations

import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from harness.backends import Backend, make_backend
from harness.backends.hf import HFBackend
from harness.config import SelectConfig
from harness.dits.influence.record import Estimate, answer_mode, closing_turn, make_units
from harness.errors import HarnessError
from harness.mas.dialogue import Dialogue, DialogueConfig, run_dialogues, same_answer, start
from harness.mas.roster import roster_for
from harness.mas.speakers import Speakers
from harness.mas.scoring import dialogue_score
from harness.screen.dpo import EncodedPair, dpo_loss, encode_pair, response_logps, shared_prompt_logps
from harness.screen.policy import lora_policy

log = logging.getLogger(__name__)

ETA_GROWTH = 3.0  # eta auto's factor between trials


# The unit step: a fresh AdamW's first step (about eta * sign(gradient), as the reference), or plain SGD.
STEP_OPTIMIZERS = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}


@dataclass
class Start:
    """What the units step from and are compared with (`ReferencePath.begin`)."""

    theta_star: list[torch.Tensor]
    f_before: float
    answers_before: list[str]
    items_before: list[float]
    units: list[list[int]]
    eta: float
    trials: list[dict]
    probe: tuple | None  # loss influence's validation pairs, their reference log-probabilities, the loss
    seconds: dict  # warm-up; calibration: theta*'s validation, eta auto's trials and the loss probe


def progress(units, desc: str | None):
    return tqdm(units, desc=desc, unit="unit", file=sys.stderr, dynamic_ncols=True) if desc else units


class ReferencePath:
    """Influence by the reference procedure (see the module's docstring): every unit's validation
    dialogues decoded in full on its weights."""

    name = "reference"  # `influence.path` and `Estimate.path`

    def __init__(self, pairs, cfg: SelectConfig, task, policy: str, validation, key: str = ""):
        """`key`: the estimate's cache key (`estimator.estimate`), which names what a path leaves
        outside this process (the server path's adapters)."""
        self.pairs, self.cfg, self.task, self.validation, self.key = pairs, cfg, task, validation, key
        self.beta = cfg.influence.beta if cfg.influence.beta is not None else task.recipe.dpo_beta
        self.model, self.tokenizer, info = lora_policy(policy, cfg)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.backend = HFBackend(loaded=(self.model, self.tokenizer, info), device=cfg.device,
                                 batch_size=cfg.batch_size)
        # The config's roster, as `estimator.prepare` dealt the task's context for it
        self.roster = roster_for(task.setting, cfg.roster, cfg.speaker_models)
        # No policy model named: a frozen speaker never shares the trained policy's backend.
        self.speakers = Speakers.for_roster(self.roster, self.backend, lambda model: make_backend(cfg, model=model))
        self.encoded = [encode_pair(self.tokenizer, p) for p in pairs]
        self.dialogues_run = 0
        self.unit_seconds = {"step": 0.0, "validation": 0.0}
        self.account: dict = {}  # the fast path's account of its drafts; none on this path
        with torch.no_grad(), self.model.disable_adapter():
            self.reference = torch.cat([self.logps(range(i, min(i + cfg.batch_size, len(pairs))))
                                        for i in range(0, len(pairs), cfg.batch_size)])

    def logps(self, indices) -> torch.Tensor:
        """Chosen and rejected as two padded rows of one batch, as trl's DPO forward pass."""
        return response_logps(self.model, [self.encoded[i] for i in indices], self.tokenizer.pad_token_id)

    def shared_logps(self, indices) -> torch.Tensor:
        """The same with each prompt encoded once for both responses (about half the work), where
        that is the same computation: LoRA dropout would draw one mask where the two rows draw two."""
        if self.cfg.lora.dropout:
            return self.logps(indices)
        return shared_prompt_logps(self.model, [self.encoded[i] for i in indices])

    def unit_logps(self, indices) -> torch.Tensor:
        """What a unit's step takes its loss on: on this path, the padded rows, as trl."""
        return self.logps(indices)

    def pair_losses(self, indices: list[int], logps) -> torch.Tensor:
        """Each pair's DPO loss, its log-probabilities from `logps` (`logps`, `shared_logps`)."""
        return dpo_loss(logps(indices), self.reference[indices], self.beta)

    def loss(self, indices: list[int], logps) -> torch.Tensor:
        return self.pair_losses(indices, logps).mean()

    def step(self, optimizer, indices: list[int], logps=None) -> None:
        """One optimizer step on the mean DPO loss of `indices` (log-probabilities from `logps`, by
        default `shared_logps`), its gradient accumulated over micro-batches: the attention maps of a
        batch of long dialogue prompts, kept for the backward pass, outgrow memory (8 CBT sequences of
        ~1,000 tokens took SmolLM2 past 18 GB)."""
        self.model.train()
        size = self.cfg.influence.micro_batch
        for lo in range(0, len(indices), size):
            part = indices[lo:lo + size]
            (self.loss(part, logps or self.shared_logps) * (len(part) / len(indices))).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.model.eval()

    @torch.no_grad()
    def restore(self, weights: list[torch.Tensor]) -> None:
        for p, saved in zip(self.params, weights):
            p.copy_(saved)

    def dialogues(self, questions=None, backend: Backend | None = None, dialogues=None, lookahead: int = 0):
        """Greedy dialogues on the validation questions (or `questions`), all batched together;
        `dialogues` continues dialogues already under way instead."""
        cfg = self.cfg
        if dialogues is None:
            questions = questions or self.validation
            self.dialogues_run += len(questions)
            dialogues = start(questions, self.roster)
        return run_dialogues(dialogues, Speakers(backend or self.backend, self.speakers.frozen),
                             DialogueConfig(cfg.max_turns, cfg.max_new_tokens, 0.0, lookahead=lookahead,
                                            answer_mode=answer_mode(self.pairs),
                                            closing_turn=closing_turn(self.pairs)), cfg.seed)

    def theta_star_dialogues(self):
        """The validation dialogues at theta*, which every unit's are compared with."""
        return self.dialogues()

    def score(self, dialogues) -> tuple[float, list[str], list[float]]:
        """F of finished dialogues (the task's metric), their final answers and their own scores."""
        scores = [dialogue_score(d, self.task.metric, self.tokenizer) for d in dialogues]
        return sum(scores) / len(scores), [d.final_answer for d in dialogues], scores

    def validate(self, questions=None) -> tuple[float, list[str], list[float]]:
        """F on the validation questions (or `questions`), their final answers and their scores."""
        return self.score(self.dialogues(questions))

    def validation_pairs(self, dialogues) -> list[EncodedPair]:
        """Loss influence's validation pairs from theta*'s validation dialogues, one per question: the
        policy's first turn (its first agent's) giving the gold answer, preferred over the turn theta*
        gave there (questions theta* already answers right there, or whose dialogue ended before that
        turn, carry no preference and are left out)."""
        agent = self.roster.policy_agents[0]  # round robin: its first turn is utterance `agent`
        pairs = []
        for d in dialogues:
            if len(d.utterances) <= agent:
                continue
            first, golds = d.utterances[agent], d.question.golds
            if first.answer is not None and any(same_answer(first.answer, g) for g in golds):
                continue
            prompt = Dialogue(d.question, d.systems, d.utterances[:agent], roster=d.roster).messages(agent)
            pairs.append(encode_pair(self.tokenizer, {"prompt": prompt,
                                                      "chosen": f"{first.speaker}: <A>{golds[0]}</A>",
                                                      "rejected": first.text}))
        if not pairs:
            raise HarnessError("loss influence: theta* answers every validation question right at the policy's first "
                               "turn, so there is no validation pair to take a loss on")
        return pairs

    @torch.no_grad()
    def validation_loss(self, pairs: list[EncodedPair], reference: torch.Tensor) -> float:
        pad = self.tokenizer.pad_token_id
        return dpo_loss(response_logps(self.model, pairs, pad), reference, self.beta).mean().item()

    def unit_optimizer(self, eta: float):
        return STEP_OPTIMIZERS[self.cfg.influence.step_optimizer](self.params, eta)

    def step_from(self, theta_star: list[torch.Tensor], unit: list[int], eta: float) -> None:
        """theta': a fresh optimizer's one step on `unit` from theta*."""
        started = time.perf_counter()
        self.restore(theta_star)
        self.step(self.unit_optimizer(eta), unit, self.unit_logps)
        self.unit_seconds["step"] += time.perf_counter() - started

    def unit_step(self, theta_star: list[torch.Tensor], unit: list[int], eta: float,
                  answers_before: list[str]) -> tuple[float, int, list[float]]:
        """F after one step on `unit` from theta*, how many validation answers it changed, and each
        validation question's score."""
        self.step_from(theta_star, unit, eta)
        started = time.perf_counter()
        f, answers, items = self.validate()
        self.unit_seconds["validation"] += time.perf_counter() - started
        return f, sum(a != b for a, b in zip(answers, answers_before)), items

    def unit_scores(self, theta_star, units, eta: float, answers_before, desc: str | None = None, between=None):
        """Per unit, F after one step on it from theta*, how many validation answers it changed and
        each validation question's score.
        `between(i)`, if given, runs after unit i's own work (a benchmark interleaves another path's)."""
        scored = []
        for i, unit in enumerate(progress(units, desc)):
            scored.append(self.unit_step(theta_star, unit, eta, answers_before))
            if between:
                between(i)
        return scored

    def calibrate(self, theta_star, units, answers_before, items_before) -> tuple[float, list[dict]]:
        """The smallest eta x 3^k whose median calibration unit changes the target share of the
        validation questions' scores (a changed answer that scores the same moves no influence)."""
        inf = self.cfg.influence
        probe = units[:inf.eta_calibration_units]
        trials = []
        for k in range(inf.eta_auto_steps + 1):
            eta = inf.eta * ETA_GROWTH ** k
            changed = sorted(sum(a != b for a, b in zip(items, items_before))
                             for _, _, items in self.unit_scores(theta_star, probe, eta, answers_before))
            share = statistics.median(changed) / len(self.validation)
            trials.append({"eta": eta, "changed_scores": changed, "median_share": share})
            if share >= inf.eta_target_share:
                return eta, trials
        log.warning("eta auto: even eta %.3g changed a median %.0f%% of the validation scores (target %.0f%%); "
                    "using it", trials[-1]["eta"], 100 * trials[-1]["median_share"], 100 * inf.eta_target_share)
        return trials[-1]["eta"], trials

    def warm_up(self) -> list[torch.Tensor]:
        """LoRA DPO on the pool for warmup_steps: theta*, the point every unit steps from."""
        inf, n = self.cfg.influence, len(self.pairs)
        warmup = torch.optim.AdamW(self.params, lr=inf.warmup_lr, weight_decay=0.0)
        order = random.Random(self.cfg.seed).sample(range(n), n)
        for step in tqdm(range(inf.warmup_steps), desc="influence warm-up", unit="step", file=sys.stderr,
                         dynamic_ncols=True):
            self.step(warmup, [order[(step * inf.warmup_batch + j) % n] for j in range(inf.warmup_batch)])
        return [p.detach().clone() for p in self.params]

    def loss_probe(self, theta_star, dialogues) -> tuple[list[EncodedPair], torch.Tensor, float]:
        """The validation pairs (from theta*'s validation `dialogues`), their reference
        log-probabilities and the loss at theta*."""
        self.restore(theta_star)
        pairs = self.validation_pairs(dialogues)
        with torch.no_grad(), self.model.disable_adapter():
            reference = response_logps(self.model, pairs, self.tokenizer.pad_token_id)
        return pairs, reference, self.validation_loss(pairs, reference)

    def loss_step(self, theta_star, unit: list[int], eta: float, probe) -> float:
        """The validation loss after one step on `unit` from theta*."""
        self.step_from(theta_star, unit, eta)
        return self.validation_loss(probe[0], probe[1])

    def begin(self, kind: str = "metric") -> Start:
        """Everything before the units: theta*, F at theta* (or the loss), the units and eta."""
        cfg = self.cfg
        started = time.time()
        theta_star = self.warm_up()
        warmed = time.time()
        at_theta_star = self.theta_star_dialogues()
        f_before, answers_before, items_before = self.score(at_theta_star)
        units = make_units(len(self.pairs), cfg.influence.unit_size, cfg.seed)
        eta, trials = (self.calibrate(theta_star, units, answers_before, items_before) if cfg.influence.eta_auto
                       else (cfg.influence.eta, []))
        probe = None
        if kind == "loss":
            probe = self.loss_probe(theta_star, at_theta_star)
            f_before = probe[2]
        return Start(theta_star, f_before, answers_before, items_before, units, eta, trials, probe,
                     {"warmup": warmed - started, "calibration": time.time() - warmed})

    def run(self, kind: str = "metric") -> Estimate:
        start = self.begin(kind)
        started = time.time()
        if kind == "loss":  # no dialogues after the step: no answers to compare
            scored = [(self.loss_step(start.theta_star, unit, start.eta, start.probe), None, None)
                      for unit in progress(start.units, "loss influence units")]
        else:
            scored = self.unit_scores(start.theta_star, start.units, start.eta, start.answers_before,
                                      "metric influence units")
        return self.finish(start, scored, time.time() - started)

    def finish(self, start: Start, scored: list[tuple], units_seconds: float) -> Estimate:
        """The estimate from the units' (F or loss, changed answers, item scores), theta* restored."""
        self.restore(start.theta_star)
        changed = [c for _, c, _ in scored if c is not None]
        items = [i for _, _, i in scored if i is not None]
        return Estimate(start.units, start.f_before, [f for f, _, _ in scored], changed,
                        [q.id for q in self.validation], {**start.seconds, "units": units_seconds}, start.eta,
                        self.dialogues_run, self.backend.usage.as_dict(), start.trials, drafts=dict(self.account),
                        unit_seconds=self.unit_seconds, path=self.name,
                        items_before=start.items_before if items else [], items_after=items,
                        frozen_speakers=self.speakers.frozen_info())
