"""The chaos seam (`harness.records.chaos`) at trl's checkpoints: while a chaos test runs, every
trainer this process builds calls `chaos.checkpoint()` right after it saved a checkpoint
(`train.checkpoint_steps`), so a kill can land in a training stage between two of its steps. It
joins transformers' default callbacks only when the seam is armed: a run without the chaos
variables never imports this module."""

from __future__ import annotations

from transformers import TrainerCallback, trainer

from harness.records import chaos


class ChaosCheckpoints(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        chaos.checkpoint()


def arm() -> None:
    if ChaosCheckpoints not in trainer.DEFAULT_CALLBACKS:
        trainer.DEFAULT_CALLBACKS.append(ChaosCheckpoints)
