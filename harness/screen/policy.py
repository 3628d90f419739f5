"""The policy with the LoRA adapter that influence steps train (its A matrices drawn from the seed)."""

from __future__ import annotations

from harness import models
from harness.config import SelectConfig
from harness.seeding import seed_everything


def lora_policy(policy: str, cfg: SelectConfig) -> tuple:
    """(peft model, tokenizer, model info) of `policy` with a fresh adapter of `cfg.lora` on every
    linear layer: B starts at zero, so it is the policy itself until a step moves it."""
    from peft import LoraConfig, get_peft_model

    seed_everything(cfg.seed)  # the LoRA A matrices are drawn at random
    model, tokenizer, info = models.load(policy, cfg.device, cfg.dtype)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), tokenizer, info
