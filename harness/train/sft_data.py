"""SFT data as the reference builds it (Optima's ``process_dataloader_for_sft``).

Per question, `sft.samples` dialogues are sampled with the current policy and rewarded with the
Optima reward, its token normaliser the most tokens any of the question's samples used (samples
cut at the utterance cap excepted, as the reference's "large" ones); the best one per question is a candidate; the questions are ranked by that reward,
the top `keep_fraction` kept, and those under `epsilon` dropped. Each kept dialogue gives one
example per agent the policy speaks for (Alice's memory and Bob's in the two settings), and SFT
trains each on that agent's own utterances only; a frozen speaker's turns are context (`user`
messages of the others' memories), never trained.
"""

from __future__ import annotations

import dataclasses

from harness.mas.dialogue import Dialogue
from harness.mas.scoring import dialogue_score
from harness.synth.reward import RewardConfig, reward


def keep_best(best_rewards: list[float], keep_fraction: float, epsilon: float) -> list[int]:
    """Indices of the questions kept: the top `keep_fraction` by reward (ties in pool order), then
    those whose reward reaches `epsilon`."""
    order = sorted(range(len(best_rewards)), key=lambda i: -best_rewards[i])
    return [i for i in order[:int(len(order) * keep_fraction)] if best_rewards[i] >= epsilon]


def agent_view(d: Dialogue, agent: int) -> list[dict] | None:
    """The agent's memory up to its last own utterance (what follows it carries no loss), or
    None when it never spoke."""
    messages = d.messages(agent)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    return None if last is None else messages[:last + 1]


def question_t_norm(group: list[Dialogue]) -> int:
    """The SFT reward's T_norm for one question: the most tokens of its samples not cut at the cap."""
    tokens = [(sum(u.completion_tokens for u in d.utterances), any(u.truncated for u in d.utterances)) for d in group]
    return max(max((t for t, cut in tokens if not cut), default=0) or max(t for t, _ in tokens), 1)


def build_sft_data(groups: list[list[Dialogue]], nll: dict[str, float], weights: RewardConfig, metric: str,
                   tokenizer, keep_fraction: float, epsilon: float) -> tuple[list[dict], list[dict]]:
    """(examples, one record per question) from each question's sampled dialogues; `weights` gives
    the reward's weights and caps, its T_norm is set per question."""
    best, records = [], []
    for group in groups:
        reward_cfg = dataclasses.replace(weights, t_norm=question_t_norm(group))
        rewards = [reward(dialogue_score(d, metric, tokenizer), d.utterances, [nll[u.text] for u in d.utterances],
                          reward_cfg, d.roster.names) for d in group]
        top = max(range(len(group)), key=lambda i: rewards[i].total)
        best.append(group[top])
        records.append({"question_id": group[0].question.id, "t_norm": reward_cfg.t_norm,
                        "rewards": [r.total for r in rewards],
                        "best": top, "best_reward": rewards[top].as_dict(), "kept": False})
    examples = []
    for i in keep_best([r["best_reward"]["total"] for r in records], keep_fraction, epsilon):
        records[i]["kept"] = True
        examples += dialogue_examples(best[i], records[i]["best_reward"]["total"])
    return examples, records


def dialogue_examples(d: Dialogue, reward: float) -> list[dict]:
    """A dialogue's SFT examples: one per agent the policy speaks for, its view up to its last turn."""
    views = [(agent, agent_view(d, agent)) for agent in d.roster.policy_agents]
    return [{"question_id": d.question.id, "agent": d.roster.agents[agent].name, "reward": reward, "messages": view}
            for agent, view in views if view is not None]
