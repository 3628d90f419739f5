"""The Optima reward of a finished dialogue, also the Q-value signal of the tree search.

    R = S_task + lambda1 * T / T_norm + lambda2 / max_i nll(m_i)

S_task is the task metric of the dialogue's answer; T the tokens the dialogue generated, every
agent's (lambda1 is negative: a token penalty); nll(m_i) the mean token negative log-likelihood of
utterance i alone, as one assistant turn, under the frozen initial model, so the last term rewards
dialogues whose worst utterance is still readable language. The hard overrides are the reference's
(docs/reference-code.md §5), with one fix: the name prefix is removed as a prefix, where the reference's
``str.strip("Alice:")`` strips a character set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harness.mas.dialogue import NAMES, Utterance
from harness.tasks import TASKS


@dataclass(frozen=True)
class RewardConfig:
    lambda1: float
    lambda2: float
    t_norm: int
    min_tokens: int = 40  # T at or below: token term -1
    max_tokens: int = 2000  # T above: loss term -1


def reward_config(cfg, t_norm: int) -> RewardConfig:
    """The reward of a `SynthConfig`: its weights, else the task's recipe, with this T_norm."""
    recipe = TASKS.get(cfg.task).recipe
    return RewardConfig(cfg.lambda1 if cfg.lambda1 is not None else recipe.lambda1,
                        cfg.lambda2 if cfg.lambda2 is not None else recipe.lambda2,
                        t_norm, cfg.min_dialogue_tokens, cfg.max_dialogue_tokens)


@dataclass(frozen=True)
class Reward:
    total: float
    task: float
    token: float
    loss: float
    tokens: int
    impersonation: bool
    repeated: bool
    truncated: bool

    def as_dict(self) -> dict:
        return asdict(self)


def without_name(text: str, names: Sequence[str] = NAMES) -> str:
    text = text.strip()
    for name in names:
        if text.startswith(f"{name}:"):
            return text[len(name) + 1:].strip()
    return text


def impersonates(text: str, names: Sequence[str] = NAMES) -> bool:
    """The speaker wrote a turn for another agent too: name tags twice or more in all (two agents'
    tags, or one tag twice)."""
    return sum(text.count(f"{name}:") for name in names) >= 2


def repeats(utterances: Sequence[Utterance], names: Sequence[str] = NAMES) -> bool:
    seen = set()
    for u in utterances:
        key = without_name(u.text, names).casefold()
        if key in seen:
            return True
        seen.add(key)
    return False


def reward(task_score: float, utterances: Sequence[Utterance], nlls: Sequence[float], cfg: RewardConfig,
           names: Sequence[str] = NAMES) -> Reward:
    """The reward of one dialogue; `nlls[i]` is utterance i's mean token NLL under the frozen model;
    `names`: the roster's agents (whose name tags mark an impersonation)."""
    tokens = sum(u.completion_tokens for u in utterances)
    truncated = any(u.truncated for u in utterances)
    impersonation = any(impersonates(u.text, names) for u in utterances)
    repeated = repeats(utterances, names)

    task = 0.0 if impersonation else task_score
    token = -1.0 if truncated or tokens <= cfg.min_tokens else cfg.lambda1 * tokens / cfg.t_norm
    if not utterances or tokens > cfg.max_tokens:
        loss = -1.0
    elif repeated:
        loss = 0.0
    else:
        loss = cfg.lambda2 / max(max(nlls), 1e-6)
    return Reward(task + token + loss, task, token, loss, tokens, impersonation, repeated, truncated)
