"""What reports say of a coach, from scored actions alone (pure: no engine, no model).

Each action is a row: the agent who acted, its action type (`generate`, `refine`, `closing`), the
coach's score and whether the reply was read, and the outcomes of the dialogues it was part of: the
mean Optima reward and the mean task score (final correctness) of the rollouts through it. A coach
whose scores do not rank actions by final correctness (|Spearman| below `NO_SIGNAL`, or undefined:
one side constant) gives no signal.
"""

from __future__ import annotations

import statistics

from harness import correlation

NO_SIGNAL = 0.1  # |Spearman's rho| against final correctness below this: the coach's credit carries no signal


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (`harness.correlation`), None below 3 pairs as well."""
    return correlation.spearman(x, y) if len(x) >= 3 else None


def mean_by(rows: list[dict], key: str) -> dict[str, dict]:
    """Per value of `key`: actions, mean score and its difference from the mean over all (the bias)."""
    overall = statistics.fmean(r["score"] for r in rows) if rows else 0.0
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r["score"])
    return {k: {"actions": len(v), "mean_score": statistics.fmean(v), "bias": statistics.fmean(v) - overall}
            for k, v in sorted(groups.items())}


def summary(rows: list[dict]) -> dict:
    """The coach's figures over its scored actions (rows: agent, action, score, parsed, reward, correct)."""
    scored = [r for r in rows if r.get("reward") is not None]
    rho_reward = spearman([r["score"] for r in scored], [r["reward"] for r in scored])
    rho_correct = spearman([r["score"] for r in scored], [r["correct"] for r in scored])
    return {
        "actions": len(rows),
        "parse_rate": sum(r["parsed"] for r in rows) / len(rows) if rows else None,
        "mean_score": statistics.fmean(r["score"] for r in rows) if rows else None,
        "by_agent": mean_by(rows, "agent"),  # the credit each agent earned
        "by_action": mean_by(rows, "action"),
        "spearman_reward": rho_reward,
        "spearman_correct": rho_correct,
        "no_signal": rho_correct is None or abs(rho_correct) < NO_SIGNAL,
    }
