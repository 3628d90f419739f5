"""Influence of candidate units on the validation metric: the reference path and the fast path.

The reference path is faithful to the reference procedure (section 8.2-8.3 of the Optima/DITS
report) and kept as the correctness oracle: a LoRA adapter is warmed up with DPO on the pool
(theta*); then, per unit, the adapter is restored to theta*, a fresh optimizer takes one step of the
DPO loss on the unit (theta'), and the V greedy validation dialogues run batched together on theta'.
F(theta*) is measured too, so I = (F(theta') - F(theta*)) / eta says whether a unit helps. The loss
ablation takes the validation DPO loss instead of F.

The fast path gives the same F(theta') with far fewer decoding steps: under greedy decoding theta*'s
validation dialogues are a draft of every theta'. A policy that, fed a draft turn whole, predicts each
token theta* generated and then its end of turn would have generated that turn itself; so one forward
pass per agent checks a whole dialogue (as speculative decoding checks a draft), a dialogue that holds
is theta*'s, and only the others are decoded, from the first turn theta' would say differently. The
checks run on a plain copy of the model with theta' merged into its weights, each agent's opening
(its instructions, alike in every dialogue) encoded once per unit and attended to beside a causal
pass over the rest; the unit's step encodes each pair's prompt once for both responses; the
dialogues that diverge start from the keys/values their checks computed and decode several tokens a
step where their own text guesses them right (prompt lookup, each guess checked as the drafts are).
The one difference from the reference is floating point: a check reads logits computed over the
whole sequence (on merged weights) where decoding computes them a token at a time, so an argmax
within a near-tie can differ; the checked positions within one are counted, as are tokens decoded
within one in steps that fed guesses.

Results are cached by (pairs, policy, validation questions, influence knobs, kind): gamma and alpha
are not in the key, so gamma 0 and gamma 1 of one suite share one estimate.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness import models, runs
from harness.backends.base import Backend
from harness.backends.hf import CAUSAL_AFTER_CACHE, NEAR_TIE, HFBackend, common_prefix, top_two
from harness.config import SelectConfig
from harness.dits.dpo import EncodedPair, dpo_loss, encode_pair, response_logps, shared_prompt_logps
from harness.errors import HarnessError
from harness.evaluation import dialogue_score, seed_everything
from harness.mas.dialogue import DialogueConfig, run_dialogues, same_answer, start
from harness.synth.reward import RECIPES
from harness.tasks import get_task

log = logging.getLogger(__name__)

# The knobs an estimate depends on; the cache key hashes them with the pairs and the validation set.
KNOBS = ("unit_size", "warmup_steps", "warmup_batch", "warmup_lr", "eta", "step_optimizer", "beta", "lora_r",
         "lora_alpha", "lora_dropout", "max_turns", "max_new_tokens", "context_mode", "seed", "dtype", "eta_auto",
         "eta_target_share", "eta_calibration_units", "eta_auto_steps", "micro_batch", "influence_path",
         "decode_lookahead")
ETA_GROWTH = 3.0


# The unit step: a fresh AdamW's first step (about eta * sign(gradient), as the reference), or plain SGD.
STEP_OPTIMIZERS = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}


@dataclass
class Estimate:
    units: list[list[int]]  # pool indices of each unit's pairs
    f_before: float  # F(theta*); loss influence: the validation DPO loss at theta*
    f_after: list[float]  # F(theta') per unit; loss influence: the loss at theta'
    changed_answers: list[int]  # validation answers that differ from theta*'s, per unit
    validation_ids: list[str]
    seconds: dict
    eta: float  # the unit steps' learning rate (calibrated with eta_auto)
    validation_dialogues: int  # every validation dialogue run: theta*, calibration trials and units
    usage: dict = field(default_factory=dict)  # the validation dialogues' tokens and requests
    calibration: list[dict] = field(default_factory=list)  # eta_auto's trials: eta, changed answers per unit
    reused: bool = False  # read from the cache: computed by an earlier selection (its seconds are not this one's)
    # The fast path's account: draft dialogues that held, dialogues decoded again and their turns,
    # near-ties (checked positions, and tokens decoded in steps that fed guesses, whose top two logits
    # are within NEAR_TIE: where its outcome could differ from the reference path's), tokens the
    # checks encoded and those they read from the agents' openings encoded once a unit.
    drafts: dict = field(default_factory=dict)
    unit_seconds: dict = field(default_factory=dict)  # the unit steps' seconds: the steps, the validation
    path: str = ""  # the influence path taken (`path_for`)
    # Each validation question's score at theta* and after each unit's step (metric influence): the
    # split-half reliability of I reads them (`scoring.split_half`)
    items_before: list[float] = field(default_factory=list)
    items_after: list[list[float]] = field(default_factory=list)

    def per_pair(self, values: list[float], n: int) -> list[float]:
        out = [0.0] * n
        for unit, value in zip(self.units, values):
            for i in unit:
                out[i] = value
        return out


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


def make_units(n: int, size: int, seed: int) -> list[list[int]]:
    """Blocks of `size` consecutive pairs of a seeded shuffle of the pool (the reference's blocks)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def estimate(pairs: list[dict], cfg: SelectConfig, cache_dir: Path | None, kind: str = "metric") -> Estimate:
    """Per unit of pairs, the validation metric F (kind "metric", DITS) or the validation DPO loss
    (kind "loss", the ablation) after one step from theta*, and the same before the step."""
    task, policy, validation = prepare(pairs, cfg)
    key_data = {"pairs": [[p["pair_id"], p["chosen"], p["rejected"]] for p in pairs],
                "policy": pairs[0]["policy"]["sha256"], "validation": [q.id for q in validation],
                "knobs": {k: getattr(cfg, k) for k in KNOBS}, "kind": kind, "answer_mode": answer_mode(pairs),
                "closing_turn": closing_turn(pairs)}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir / f"{key}.json" if cache_dir else None
    if cached and cached.exists():
        return replace(Estimate(**json.loads(cached.read_text())), reused=True)

    result = PATHS[path_for(cfg, pairs)](pairs, cfg, task, policy, validation).run(kind)
    if cached:
        with runs.atomic_file(cached) as tmp:
            runs.write_json(tmp, asdict(result))
    return result


def answer_mode(pairs: list[dict]) -> str:
    """The answer mode the pairs were grown in (`harness synth` records it; older pairs: generate):
    validation dialogues read answers the same way."""
    return pairs[0].get("answer_mode", "generate") if pairs else "generate"


def closing_turn(pairs: list[dict]) -> bool:
    """Whether the pairs' dialogues had the closing answer turn (older pairs: no); validation
    dialogues run the same way."""
    return bool(pairs and pairs[0].get("closing_turn", False))


def path_for(cfg: SelectConfig, pairs: list[dict]) -> str:
    """The influence path an estimate takes. The fast path's drafts hold where no token changes, but in
    answer_mode=choice a unit's step moves the option scores without changing a token: until the fast
    path rescores the options under each unit's weights, choice-mode selection takes the reference path."""
    if cfg.influence_path == "fast" and answer_mode(pairs) == "choice":
        return "reference"
    return cfg.influence_path


def prepare(pairs: list[dict], cfg: SelectConfig):
    """The task, the policy and the validation questions of an estimate, checked: the policy must be
    the one that grew the pairs, the validation questions disjoint from the pairs' (unless allowed)."""
    if cfg.step_optimizer not in STEP_OPTIMIZERS:
        raise HarnessError(f"step_optimizer must be one of {', '.join(STEP_OPTIMIZERS)}, got {cfg.step_optimizer!r}")
    if cfg.eta <= 0:
        raise HarnessError(f"eta must be positive (the unit step's learning rate), got {cfg.eta}")
    if cfg.influence_path not in PATHS:
        raise HarnessError(f"influence_path must be one of {', '.join(PATHS)}, got {cfg.influence_path!r}")
    for knob, least in (("micro_batch", 1), ("decode_units", 1), ("decode_lookahead", 0)):
        if getattr(cfg, knob) < least:
            raise HarnessError(f"{knob} must be at least {least}, got {getattr(cfg, knob)}")
    if cfg.eta_auto and not (0 < cfg.eta_target_share <= 1 and cfg.eta_calibration_units >= 1
                             and cfg.eta_auto_steps >= 0):
        raise HarnessError("eta auto needs eta_target_share in (0, 1], eta_calibration_units >= 1 and "
                           f"eta_auto_steps >= 0; got {cfg.eta_target_share}, {cfg.eta_calibration_units}, "
                           f"{cfg.eta_auto_steps}")
    task_name = pairs[0]["task"]
    task = get_task(task_name, context_mode=cfg.context_mode, seed=cfg.seed)
    policy = cfg.model or pairs[0]["policy"]["name"]
    models.check(policy)
    grown_by = pairs[0]["policy"]
    if models.weights_hash(models.resolve(policy)) != grown_by["sha256"]:
        raise HarnessError(f"the pairs were grown by {grown_by['name']} ({grown_by['sha256'][:12]}), not by "
                           f"{policy}: estimate influence on the policy that grew them")
    validation = task.load(cfg.val_split, cfg.data_dir, cfg.validation_size, cfg.online)
    if not validation:
        raise HarnessError(f"{task_name}/{cfg.val_split}: no validation questions")
    overlap = {p["question_id"] for p in pairs} & {q.id for q in validation}
    if overlap and not cfg.allow_overlap:
        raise HarnessError(f"{len(overlap)} of the {len(validation)} {cfg.val_split} questions are training "
                           f"questions of the pairs (e.g. {min(overlap)}); choose a disjoint val_split "
                           "or set allow_overlap=true")
    return task, policy, validation


class ReferencePath:
    def __init__(self, pairs, cfg: SelectConfig, task, policy: str, validation):
        from peft import LoraConfig, get_peft_model

        self.pairs, self.cfg, self.task, self.validation = pairs, cfg, task, validation
        self.beta = cfg.beta if cfg.beta is not None else RECIPES[task.name].dpo_beta
        seed_everything(cfg.seed)  # the LoRA A matrices are drawn at random
        model, self.tokenizer, info = models.load(policy, cfg.device, cfg.dtype)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        self.model = get_peft_model(model, lora)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.backend = HFBackend(loaded=(self.model, self.tokenizer, info), device=cfg.device,
                                 batch_size=cfg.batch_size)
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
        if self.cfg.lora_dropout:
            return self.logps(indices)
        return shared_prompt_logps(self.model, [self.encoded[i] for i in indices])

    def unit_logps(self, indices) -> torch.Tensor:
        """What a unit's step takes its loss on: on this path, the padded rows, as trl."""
        return self.logps(indices)

    def loss(self, indices: list[int], logps) -> torch.Tensor:
        return dpo_loss(logps(indices), self.reference[indices], self.beta).mean()

    def step(self, optimizer, indices: list[int], logps=None) -> None:
        """One optimizer step on the mean DPO loss of `indices` (log-probabilities from `logps`, by
        default `shared_logps`), its gradient accumulated over micro-batches: the attention maps of a
        batch of long dialogue prompts, kept for the backward pass, outgrow memory (8 CBT sequences of
        ~1,000 tokens took SmolLM2 past 18 GB)."""
        self.model.train()
        size = self.cfg.micro_batch
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
            dialogues = start(questions, self.task.setting)
        return run_dialogues(dialogues, backend or self.backend,
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
        first speaker's turn giving the gold answer, preferred over the turn theta* gave there
        (questions theta* already answers right carry no preference and are left out)."""
        pairs = []
        for d in dialogues:
            first, golds = d.utterances[0], d.question.golds
            if first.answer is not None and any(same_answer(first.answer, g) for g in golds):
                continue
            prompt = start([d.question], self.task.setting)[0].messages(0)
            pairs.append(encode_pair(self.tokenizer, {"prompt": prompt,
                                                      "chosen": f"{first.speaker}: <A>{golds[0]}</A>",
                                                      "rejected": first.text}))
        if not pairs:
            raise HarnessError("loss influence: theta* answers every validation question right at its first turn, "
                               "so there is no validation pair to take a loss on")
        return pairs

    @torch.no_grad()
    def validation_loss(self, pairs: list[EncodedPair], reference: torch.Tensor) -> float:
        pad = self.tokenizer.pad_token_id
        return dpo_loss(response_logps(self.model, pairs, pad), reference, self.beta).mean().item()

    def unit_optimizer(self, eta: float):
        return STEP_OPTIMIZERS[self.cfg.step_optimizer](self.params, eta)

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
        cfg = self.cfg
        probe = units[:cfg.eta_calibration_units]
        trials = []
        for k in range(cfg.eta_auto_steps + 1):
            eta = cfg.eta * ETA_GROWTH ** k
            changed = sorted(sum(a != b for a, b in zip(items, items_before))
                             for _, _, items in self.unit_scores(theta_star, probe, eta, answers_before))
            share = statistics.median(changed) / len(self.validation)
            trials.append({"eta": eta, "changed_scores": changed, "median_share": share})
            if share >= cfg.eta_target_share:
                return eta, trials
        log.warning("eta auto: even eta %.3g changed a median %.0f%% of the validation scores (target %.0f%%); "
                    "using it", trials[-1]["eta"], 100 * trials[-1]["median_share"], 100 * cfg.eta_target_share)
        return trials[-1]["eta"], trials

    def warm_up(self) -> list[torch.Tensor]:
        """LoRA DPO on the pool for warmup_steps: theta*, the point every unit steps from."""
        cfg, n = self.cfg, len(self.pairs)
        warmup = torch.optim.AdamW(self.params, lr=cfg.warmup_lr, weight_decay=0.0)
        order = random.Random(cfg.seed).sample(range(n), n)
        for step in tqdm(range(cfg.warmup_steps), desc="influence warm-up", unit="step", file=sys.stderr,
                         dynamic_ncols=True):
            self.step(warmup, [order[(step * cfg.warmup_batch + j) % n] for j in range(cfg.warmup_batch)])
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
        units = make_units(len(self.pairs), cfg.unit_size, cfg.seed)
        eta, trials = (self.calibrate(theta_star, units, answers_before, items_before) if cfg.eta_auto
                       else (cfg.eta, []))
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
                        unit_seconds=self.unit_seconds, path=PATH_NAMES[type(self)],
                        items_before=start.items_before if items else [], items_after=items)


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
    order (the dialogue loop names a slot per dialogue and agent)."""

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

    def __init__(self, pairs, cfg: SelectConfig, task, policy: str, validation):
        from peft.tuners.lora import LoraLayer

        super().__init__(pairs, cfg, task, policy, validation)
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
        self.draft_turns = [[recorder.turns[d.cache_key(t % 2)][t // 2] for t in range(len(d.utterances))]
                            for d in self.draft]
        # Each agent's prompts open alike in every dialogue (its instructions: 50-190 tokens), so each
        # unit encodes that opening once per agent; it ends before any position a check reads.
        self.openings = []
        for agent in (0, 1):
            own = [t for turns in self.draft_turns for t in turns[agent::2]]
            if not own:
                self.openings.append([])
                continue
            n = min(min(len(t.prompt) for t in own) - 1, *(common_prefix(own[0].sequence, t.sequence) for t in own))
            self.openings.append(own[0].sequence[:n])
        return self.draft

    def unit_logps(self, indices) -> torch.Tensor:
        return self.shared_logps(indices)

    def unit_scores(self, theta_star, units, eta: float, answers_before, desc: str | None = None, between=None):
        scored = []
        bar = tqdm(total=len(units), desc=desc, disable=desc is None, unit="unit", file=sys.stderr,
                   dynamic_ncols=True)
        group_size = self.cfg.decode_units
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
                self.dialogues(dialogues=diverged, lookahead=self.cfg.decode_lookahead)
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
            again = start([d.question], self.task.setting)[0]
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
        first, computed = None, {}
        for agent in (0, 1):
            own = list(range(agent, len(turns), 2))
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
        cache = self.checker(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]

    def check(self, agent: int, sequence: list[int], turns: list[DraftTurn]) -> tuple[int | None, tuple]:
        """One forward pass over `sequence` (after the agent's opening, encoded once per unit): the
        index of the first of `turns` (all prefixes of it) whose tokens or end of turn the current
        weights would not generate, or None; and (sequence, its keys/values per layer)."""
        from transformers import DynamicCache

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
                           past_key_values=DynamicCache(self.opening_kv[agent]) if n else None,
                           logits_to_keep=torch.tensor(positions, device=device) - n, use_cache=True)
        computed = (sequence, [(layer.keys, layer.values) for layer in out.past_key_values.layers])
        picked, gaps = top_two(out.logits[0])
        ok = [p == t if t != eos else p in self.backend.eos_ids for p, t in zip(picked, targets)]
        bad = ok.index(False) if False in ok else len(ok)
        self.account["checked_positions"] += bad
        self.account["near_ties"] += sum(g < NEAR_TIE for g in gaps[:bad])
        return (None if bad == len(ok) else owner[bad]), computed


PATHS = {"reference": ReferencePath, "fast": FastPath}
PATH_NAMES = {cls: name for name, cls in PATHS.items()}
