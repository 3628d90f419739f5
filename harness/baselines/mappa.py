"""MAPPA-style coach credit as a selector: pairs ranked by the coach's score gap between the chosen
and the rejected action (MAPPA, arXiv 2601.23228; its RL training is not reproduced: the credit
chooses DPO pairs here).

Each side of a pair is one action: the speaker's memory before it (the pair's prompt) and what it
said. The coach (`harness.credit.coach`, any backend, its scores cached) scores both, and H is
score(chosen) - score(rejected): the pairs whose chosen action the coach credits most over the
rejected one are kept. The coach sees no gold answer unless `coach_sees_gold` is on; then the
pairs' questions are read from the task's train split for their golds.
"""

from __future__ import annotations

import statistics

from harness.config import SelectConfig
from harness.credit.coach import Action, Coach
from harness.credit.stats import spearman
from harness.errors import HarnessError
from harness.mas.roster import ROSTERS
from harness.selection import Scores, Selector, budget
from harness.tasks import get_task


class MappaSelector(Selector):
    """The alpha fraction with the largest coach score gap between chosen and rejected (MAPPA-style credit)."""

    def score(self, pairs: list[dict], cfg: SelectConfig) -> Scores:
        gaps, facts = coach_credit(pairs, cfg)
        kept = sorted(gaps, reverse=True)[:budget(len(gaps), cfg.alpha)]
        return Scores(h=gaps, influence=[None] * len(pairs), extra=facts | {"kept_gap": statistics.fmean(kept)})


def coach_credit(pairs: list[dict], cfg: SelectConfig) -> tuple[list[float], dict]:
    """Each pair's coach score gap, score(chosen) - score(rejected), and the coach's facts for the record."""
    coach = Coach.build(cfg)
    golds = golds_of(pairs, cfg) if cfg.coach_sees_gold else {}
    actions = [Action(p["speaker"], role_of(p), p["prompt"], p[side], golds.get(p["question_id"]))
               for p in pairs for side in ("chosen", "rejected")]
    scored = coach.score(actions)
    chosen, rejected = scored[0::2], scored[1::2]
    gaps = [c.score - r.score for c, r in zip(chosen, rejected)]
    return gaps, {
        "coach": coach.info(), "coach_spent": dict(coach.spent),
        "parse_rate": sum(s.parsed for s in scored) / len(scored),
        # the coach's scores of every action against its Q (the mean Optima reward of its rollouts)
        "spearman_q": spearman([s.score for s in scored], [p.get(q) for p in pairs for q in ("q_chosen", "q_rejected")])
        if all("q_rejected" in p for p in pairs) else None,
        "mean_gap": statistics.fmean(gaps),
        "agrees_with_q": sum(g > 0 for g in gaps) / len(gaps),  # the coach prefers the side Q chose
        "coach_chosen": [s.score for s in chosen], "coach_rejected": [s.score for s in rejected],
    }


def credit_of_kept(pairs: list[dict], kept: list[bool], cfg: SelectConfig) -> dict:
    """`credit=mappa` beside another selector: the coach's facts on the pool, and its mean gap over the
    pairs the selector kept (a selector the coach agrees with keeps a larger gap than the pool's
    `mean_gap`; `--selector mappa` keeps the largest)."""
    gaps, facts = coach_credit(pairs, cfg)
    chosen = [g for g, k in zip(gaps, kept) if k]
    return facts | {"kept_gap": statistics.fmean(chosen) if chosen else None}


def role_of(pair: dict) -> str:
    """The speaker's role in the pair's roster (recorded by synthesis); the speaker's name where unknown."""
    name = pair.get("roster")
    if name in ROSTERS:
        for agent in ROSTERS.get(name).agents:
            if agent.name == pair["speaker"]:
                return agent.role
    return pair["speaker"]


def golds_of(pairs: list[dict], cfg: SelectConfig) -> dict[str, str]:
    """The gold answers of the pairs' questions, from the task's train split (coach_sees_gold only)."""
    task = get_task(pairs[0]["task"], context_mode=cfg.context_mode, seed=cfg.seed)
    rows = {q.id: " / ".join(q.golds) for q in task.load("train", cfg.data_dir, None, cfg.online)}
    missing = sorted({p["question_id"] for p in pairs} - set(rows))
    if missing:
        raise HarnessError(f"coach_sees_gold: {len(missing)} pair question(s) are not in {pairs[0]['task']}/train "
                           f"(e.g. {missing[0]}); the coach cannot be shown their gold")
    return rows
