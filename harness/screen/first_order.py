"""The first-order influence screen: each unit's predicted effect on the surrogate S of the
validation metric (`surrogate`), from theta*'s gradient of S and the unit's DPO gradient.

A unit's step from theta* moves the adapter by delta = -eta * d(g), g the gradient of the unit's
mean DPO loss and d the optimizer's first-step direction (`STEP_DIRECTIONS`), so to first order
S(theta') - S(theta*) = grad S . delta, and the screen's value, per unit of eta, is -grad S . d(g):
on the scale of the exact influence I = (F(theta') - F(theta*)) / eta, and for the sign step
independent of eta. grad S costs one backward pass over the validation rows and is kept, so scoring
any number of pair sets costs one backward pass per unit.
"""

from __future__ import annotations

import torch

from harness.backends import make_backend
from harness.backends.hf import HFBackend
from harness.config import SelectConfig
from harness.errors import HarnessError
from harness.mas.dialogue import Dialogue, DialogueConfig, run_dialogues, start
from harness.mas.roster import roster_for
from harness.mas.speakers import Speakers
from harness.screen.dpo import dpo_loss, encode_pair, response_logps
from harness.screen.policy import lora_policy
from harness.screen.surrogate import surrogate_parts, surrogate_rows

ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which the unit step's fresh AdamW uses
# Per parameter, the unit step's direction from its gradient g: a fresh AdamW's bias-corrected first
# step is lr * g / (|g| + eps), about lr * sign(g); SGD's is lr * g.
STEP_DIRECTIONS = {"adamw": lambda g: g / (g.abs() + ADAM_EPS), "sgd": lambda g: g}


class InfluenceScreen:
    """Screens pair sets against theta*'s validation dialogues (see the module's docstring)."""

    def __init__(self, model, tokenizer, dialogues: list[Dialogue], answer_mode: str, step_optimizer: str,
                 beta: float, micro_batch: int = 1):
        """`model`: a peft model at theta* (its trainable parameters are the adapter's, which stay
        as they are); `dialogues`: its finished greedy validation dialogues."""
        if step_optimizer not in STEP_DIRECTIONS:
            raise HarnessError(f"influence.step_optimizer must be one of {', '.join(STEP_DIRECTIONS)}, "
                               f"got {step_optimizer!r}")
        self.model, self.tokenizer, self.beta, self.micro_batch = model, tokenizer, beta, micro_batch
        self.direction = STEP_DIRECTIONS[step_optimizer]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.pad = tokenizer.pad_token_id
        self.rows = surrogate_rows(dialogues, tokenizer, answer_mode)
        self.size = len(dialogues)
        # Eval mode throughout: the unit step's LoRA dropout (0 in select's lora) would make the
        # gradient a draw; the screen takes its expectation's first-order term.
        model.eval()
        self.s_before = 0.0
        for part in surrogate_parts(model, self.rows, self.size, self.pad, micro_batch):
            part.backward()
            self.s_before += part.item()
        self.grad_s = self.take_grads()

    @classmethod
    def build(cls, policy: str, cfg: SelectConfig, task, validation, answer_mode: str = "generate",
              closing_turn: bool = False) -> "InfluenceScreen":
        """theta* = the policy with a fresh adapter (the policy itself: B starts at zero), its greedy
        validation dialogues run in the config's roster (frozen speakers on their own models)."""
        model, tokenizer, info = lora_policy(policy, cfg)
        backend = HFBackend(loaded=(model, tokenizer, info), device=cfg.device, batch_size=cfg.batch_size)
        roster = roster_for(task.setting, cfg.roster, cfg.speaker_models)
        speakers = Speakers.for_roster(roster, backend, lambda name: make_backend(cfg, model=name))
        dialogues = run_dialogues(start(validation, roster), speakers,
                                  DialogueConfig(cfg.max_turns, cfg.max_new_tokens, 0.0, answer_mode=answer_mode,
                                                 closing_turn=closing_turn), cfg.seed)
        beta = cfg.influence.beta if cfg.influence.beta is not None else task.recipe.dpo_beta
        return cls(model, tokenizer, dialogues, answer_mode, cfg.influence.step_optimizer, beta,
                   cfg.influence.micro_batch)

    def take_grads(self) -> list[torch.Tensor]:
        """The accumulated gradients (zero where none reached a parameter), cleared."""
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        for p in self.params:
            p.grad = None
        return grads

    @torch.no_grad()
    def value(self) -> float:
        """S at the adapter's current weights (theta*'s rows, as the screen reads them)."""
        return sum(part.item() for part in surrogate_parts(self.model, self.rows, self.size, self.pad,
                                                           self.micro_batch))

    def score_units(self, pairs: list[dict], units: list[list[int]]) -> list[float]:
        """Per unit (indices into `pairs`, each {"prompt", "chosen", "rejected"}), the first-order
        change of S per unit of eta after one step on the unit's mean DPO loss from theta*."""
        encoded = [encode_pair(self.tokenizer, p) for p in pairs]
        with torch.no_grad(), self.model.disable_adapter():
            reference = torch.cat([response_logps(self.model, encoded[i:i + self.micro_batch], self.pad)
                                   for i in range(0, len(encoded), self.micro_batch)])
        values = []
        for unit in units:
            for lo in range(0, len(unit), self.micro_batch):  # the unit step's micro-batches
                part = unit[lo:lo + self.micro_batch]
                loss = dpo_loss(response_logps(self.model, [encoded[i] for i in part], self.pad),
                                reference[part], self.beta).mean()
                (loss * (len(part) / len(unit))).backward()
            values.append(-torch.stack([(s * self.direction(g)).sum()
                                        for s, g in zip(self.grad_s, self.take_grads())]).sum().item())
        return values

    def score_pairs(self, pairs: list[dict]) -> list[float]:
        """`score_units` with each pair its own unit."""
        return self.score_units(pairs, [[i] for i in range(len(pairs))])
