"""How a finished dialogue scores: its final answer under the task's metric."""

from __future__ import annotations

from harness.mas.dialogue import Dialogue
from harness.tasks.metrics import score


def dialogue_score(d: Dialogue, metric: str, tokenizer) -> float:
    """The task metric of a dialogue's final answer against its question's golds."""
    return score(metric, d.final_answer, d.question.golds, options=d.question.options, tokenizer=tokenizer)
