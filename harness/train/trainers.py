"""SFT and DPO with trl and a peft LoRA adapter; the adapter is merged into the saved policy.

The loss masks and the length caps are ours, not trl's: SFT examples arrive tokenized with an
assistant mask computed from the chat template (any template, no ``{% generation %}`` markers
needed), and DPO pairs whose prompt exceeds `max_prompt_length` are dropped and counted, with trl's
`max_length` set to the longest kept pair so nothing is truncated (the reference's `max_length` 512
below its prompt cap emptied responses; see docs/reference-code.md §6.3).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from harness import models, runs
from harness.config import RunConfig
from harness.screen.dpo import encode_pair
from harness.errors import HarnessError
from harness.tasks import TASKS

log = logging.getLogger(__name__)

LOGGED = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins",
          "rewards/accuracies", "logps/chosen", "logps/rejected", "mean_token_accuracy", "num_tokens")


def assistant_tokens(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of a conversation: mask 1 on the tokens of each assistant turn, its end of
    turn included, as rendered after that turn's generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        if not (upto.startswith(head) and text.startswith(upto)):
            raise HarnessError("the chat template does not render a conversation as the concatenation of its "
                               "turns; SFT masks cannot be placed")
        spans.append((len(head), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return enc["input_ids"], mask


def lora_config(cfg: RunConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def processes(cfg: RunConfig) -> int:
    """The processes a training stage runs in (`train.launcher`, harness.train.launch)."""
    return cfg.train.num_processes if cfg.train.launcher == "accelerate" else 1


def trainer_args(cfg: RunConfig, kind: str, output_dir: Path) -> dict:
    """The TrainingArguments both trainers share: the CPU profile (fp32) or the GPU one (bf16,
    `train.gradient_checkpointing`). The recipe's global batch is batch_size x grad_accum however many
    processes share it: each accumulates its part (`launch.check` refuses a grad_accum they cannot split)."""
    gpu = cfg.device.startswith("cuda")
    recipe = cfg.sft if kind == "sft" else cfg.dpo
    every = cfg.train.checkpoint_steps
    return {
        "output_dir": str(output_dir), "seed": cfg.seed, "data_seed": cfg.seed, "bf16": gpu and cfg.dtype == "bfloat16",
        "use_cpu": not gpu, "activation_checkpointing": cfg.train.gradient_checkpointing, "report_to": [],
        "save_strategy": "steps" if every else "no", "save_steps": every or 500, "logging_steps": 1,
        "lr_scheduler_type": cfg.lr_scheduler, "warmup_steps": cfg.warmup_ratio,
        "learning_rate": recipe.lr, "num_train_epochs": recipe.epochs, "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": max(1, recipe.grad_accum // processes(cfg)),
    }


def sft_config(cfg: RunConfig, output_dir: Path, max_length: int | None = None):
    from trl import SFTConfig

    return SFTConfig(**trainer_args(cfg, "sft", output_dir), max_length=max_length or cfg.sft.max_seq_length,
                     packing=False, dataset_num_proc=None)


def dpo_beta(cfg: RunConfig) -> float:
    return cfg.dpo.beta if cfg.dpo.beta is not None else TASKS.get(cfg.task).recipe.dpo_beta


def dpo_config(cfg: RunConfig, output_dir: Path, max_length: int | None = None):
    from trl import DPOConfig

    return DPOConfig(**trainer_args(cfg, "dpo", output_dir), beta=dpo_beta(cfg), loss_type=["sigmoid"],
                     max_length=max_length or cfg.dpo.max_prompt_length * 2)


def _load(model_name: str, cfg: RunConfig):
    model, tokenizer, info = models.load(model_name, cfg.device, cfg.dtype)
    if tokenizer.pad_token is None:  # the collators pad
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, info["path"]


def _merged(trainer, model_name: str, cfg: RunConfig, out: Path):
    """The policy with the trained adapter merged into it; None on every process but the main one.
    Under several processes the weights may be sharded (DeepSpeed ZeRO-3), so the trainer saves the
    adapter (gathering it) and the main process merges it into a fresh copy of the base."""
    if trainer.accelerator.num_processes == 1:
        return trainer.model.merge_and_unload()
    from peft import PeftModel

    trainer.save_model(str(out / "adapter"))
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return None
    base, _, _ = models.load(model_name, cfg.device, cfg.dtype)
    return PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()


def _save_merged(trainer, tokenizer, model_name: str, cfg: RunConfig, out: Path, name: str) -> str | None:
    """Save the merged policy as a plain model directory `out/model`; its weights hash (None on
    every process but the main one)."""
    merged = _merged(trainer, model_name, cfg, out)
    if merged is None:
        return None
    with models.quiet_bars():
        merged.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    sha = models.weights_hash(out / "model")
    (out / "model" / "harness_model.json").write_text(json.dumps({"name": name, "sha256": sha}, indent=1))
    shutil.rmtree(out / "adapter", ignore_errors=True)
    return sha


def _train(trainer):
    """trainer.train(), its bar showing the latest loss instead of printing every step's log dict
    (`--log-level debug` keeps the dicts), resumed from the last checkpoint in its output directory
    if there is one (`train.checkpoint_steps`); with the step it resumed from (0: none). Every
    logged row is in the stage's record anyway."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class LossOnBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and "loss" in (logs or {}):
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    # With transformers' logging quiet, Trainer picks PrinterCallback (no bar, every log printed)
    if not log.isEnabledFor(logging.DEBUG) and (trainer.pop_callback(PrinterCallback) or
                                                trainer.pop_callback(ProgressCallback)):
        trainer.add_callback(LossOnBar)
    last = last_checkpoint(Path(trainer.args.output_dir))
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    resumed = int(last.name.rpartition("-")[2]) if last else 0
    if resumed:
        whole_run_log(trainer.state.log_history, resumed)
        result = result._replace(training_loss=trainer.state.log_history[-1]["train_loss"])
    return result, resumed


def whole_run_log(history: list[dict], resumed: int) -> None:
    """The log of a stage resumed from step `resumed` made an uninterrupted stage's: trl counts the
    tokens it trained on (`num_tokens`) from zero in each process, and transformers averages
    `train_loss` over the steps of this process only. The earlier steps' rows came back with the
    checkpoint, and every step is logged (logging_steps=1), so the loss over all steps is the mean
    of the logged ones, added in the order the trainer adds them: an uninterrupted stage's to the bit."""
    before = max((row["num_tokens"] for row in history if "num_tokens" in row and row["step"] <= resumed), default=0)
    for row in history:
        if "num_tokens" in row and row["step"] > resumed:
            row["num_tokens"] += before
    losses = [row["loss"] for row in history if "loss" in row]
    history[-1]["train_loss"] = sum(losses) / len(losses)


def last_checkpoint(directory: Path) -> Path | None:
    """The last complete checkpoint of trl's in `directory` (the trainer writes trainer_state.json
    last); later ones a kill cut short are removed."""
    found = sorted(directory.glob("checkpoint-*"), key=lambda p: int(p.name.rpartition("-")[2]))
    while found and not (found[-1] / "trainer_state.json").exists():
        shutil.rmtree(found.pop())
    return found[-1] if found else None


def _metrics(trainer) -> list[dict]:
    return [{k: v for k, v in row.items() if k in LOGGED or k in ("step", "epoch", "train_loss", "train_runtime")}
            for row in trainer.state.log_history]


def train_sft(model_name: str, examples: list[dict], cfg: RunConfig, out: Path, name: str,
              checkpoints: Path | None = None) -> dict:
    """LoRA SFT of `model_name` on agent views; the merged policy, named `name`, goes to `out/model`,
    trl's checkpoints (if any) to `checkpoints` (default `out/trainer`)."""
    from datasets import Dataset
    from trl import SFTTrainer

    model, tokenizer, path = _load(model_name, cfg)
    rows, too_long = [], 0
    for ex in examples:
        ids, mask = assistant_tokens(tokenizer, ex["messages"])
        if len(ids) > cfg.sft.max_seq_length:
            too_long += 1
            continue
        rows.append({"input_ids": ids, "assistant_masks": mask})
    if not rows:
        raise HarnessError(f"SFT: none of the {len(examples)} examples fits sft.max_seq_length {cfg.sft.max_seq_length}")
    started = time.time()
    trainer = SFTTrainer(model=model, args=sft_config(cfg, checkpoints or out / "trainer",
                                                      max(len(r["input_ids"]) for r in rows)),
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(cfg))
    result, resumed = _train(trainer)
    sha = _save_merged(trainer, tokenizer, model_name, cfg, out, name)
    return {"base": str(path), "examples": len(rows), "dropped_too_long": too_long,
            "trained_tokens": sum(map(sum, (r["assistant_masks"] for r in rows))), "steps": result.global_step,
            "resumed_from_step": resumed, "train_loss": result.training_loss, "wall_seconds": time.time() - started,
            "policy_sha256": sha, "log": _metrics(trainer)}


def train_dpo(model_name: str, pairs: list[dict], cfg: RunConfig, out: Path, name: str,
              checkpoints: Path | None = None) -> dict:
    """LoRA DPO of `model_name` on pairs; the reference is the same model with the adapter off.
    The merged policy goes to `out/model`, trl's checkpoints as train_sft's."""
    from datasets import Dataset
    from trl import DPOTrainer

    model, tokenizer, path = _load(model_name, cfg)
    rows, lengths, trained, too_long = [], [], 0, 0
    for p in pairs:
        enc = encode_pair(tokenizer, p)
        if len(enc.prompt) > cfg.dpo.max_prompt_length:
            too_long += 1
            continue
        lengths.append(len(enc.prompt) + max(len(enc.chosen), len(enc.rejected)))
        trained += len(enc.chosen) + len(enc.rejected)  # the tokens the loss reads, as SFT's count
        rows.append({"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                     "rejected": [{"role": "assistant", "content": p["rejected"]}]})
    if not rows:
        raise HarnessError(f"DPO: every one of the {len(pairs)} selected pairs has a prompt over "
                           f"dpo.max_prompt_length {cfg.dpo.max_prompt_length}")
    if too_long:
        log.warning("DPO: %d of %d pairs dropped: prompt over dpo.max_prompt_length %d", too_long, len(pairs),
                    cfg.dpo.max_prompt_length)
    started = time.time()
    # A margin over our count of the longest pair, in case trl's tokenisation of the turn boundary
    # differs by a token: its truncation must never fire.
    trainer = DPOTrainer(model=model, ref_model=None, args=dpo_config(cfg, checkpoints or out / "trainer",
                                                                      max(lengths) + 16),
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(cfg))
    result, resumed = _train(trainer)
    sha = _save_merged(trainer, tokenizer, model_name, cfg, out, name)
    return {"base": str(path), "pairs": len(rows), "dropped_prompt_too_long": too_long, "trained_tokens": trained,
            "beta": dpo_beta(cfg),
            "steps": result.global_step, "resumed_from_step": resumed, "train_loss": result.training_loss,
            "wall_seconds": time.time() - started, "policy_sha256": sha, "log": _metrics(trainer)}


def write_training(out: Path, train: Callable[[Path], dict]) -> dict:
    """Run `train` into a temporary directory that becomes `out` when complete: the merged policy in
    `model/`, the stats in `stats.json`, trl's log in `train_log.jsonl`."""
    with runs.run_directory(out) as tmp:
        stats = train(tmp)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        runs.write_json(tmp / "stats.json", {k: v for k, v in stats.items() if k != "log"})
        runs.write_jsonl(tmp / "train_log.jsonl", stats["log"])
    return stats
