"""The influence arithmetic of DITS, on plain numbers.

I = (F(theta') - F(theta*)) / epsilon: the change of the validation metric F after one optimizer
step on a unit, per unit of step size. The reference ranks by the absolute F(theta'); the two
orders agree (F(theta*) is one number for all units) but only I says whether a unit helps, so both
are recorded. H = minmax(I) + gamma * Q, with gamma = 1 the reference's choice and gamma = 0
influence alone.
"""

from __future__ import annotations

import statistics
from collections import Counter

from harness.correlation import spearman


def influence(f_after: list[float], f_before: float, epsilon: float) -> list[float]:
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    return [(f - f_before) / epsilon for f in f_after]


def minmax(values: list[float]) -> list[float]:
    """Scaled to [0, 1]; all-equal values carry no ranking information and all map to 0."""
    low, high = min(values), max(values)
    if high == low:
        return [0.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def combined(influences: list[float], q: list[float], gamma: float) -> list[float]:
    return [i + gamma * qv for i, qv in zip(minmax(influences), q)]


def degenerate(distinct: int, units: int, gamma: float) -> str | None:
    """What H fell back to when influence takes fewer distinct values than half the units, or one
    value for several (None when it resolves them): it then ranks little beyond a few blocks of ties
    (one value: nothing, minmax maps every unit to 0), so gamma > 0 leaves the choice to Q, and with
    gamma 0 the ties keep the pool's order."""
    if distinct >= units / 2 and not (distinct == 1 and units > 1):
        return None
    return "fell back to Q" if gamma > 0 else "fell back to pool order"


def top_overlap(x: list[float], y: list[float], alpha: float) -> float:
    """The share of the top alpha fraction by x (at least one) that is also in the top alpha by y;
    ties keep the listed order, as the selection does."""
    k = max(1, round(alpha * len(x)))

    def top(values: list[float]) -> set[int]:
        return set(sorted(range(len(values)), key=lambda i: -values[i])[:k])

    return len(top(x) & top(y)) / k


def split_half(items_before: list[float], items_after: list[list[float]]) -> float | None:
    """The split-half reliability of influence: Spearman's rho across units between the influence
    estimated on the even-numbered validation questions and on the odd-numbered ones (None with
    fewer than 3 units or 2 questions, or where a half gives every unit one value)."""
    n = len(items_before)
    if len(items_after) < 3 or n < 2:
        return None
    halves = [[statistics.fmean(after[i] - items_before[i] for i in half) for after in items_after]
              for half in (range(0, n, 2), range(1, n, 2))]
    return spearman(*halves)


def resolution(f_after: list[float], changed_answers: list[int], validation_size: int, gamma: float,
               items_before: list[float] = (), items_after: list[list[float]] = ()) -> dict:
    """How finely a step size resolves the units: distinct F values, units sharing a value, whether
    that is too coarse to rank by (`degenerate`: what H fell back to, or None), how many validation
    answers each unit's step changed (median and range), and the split-half reliability of the
    ranking (`split_half`; the last two absent where the estimate ran no dialogues after the steps,
    as loss influence)."""
    counts = Counter(f_after)
    out = {"units": len(f_after), "distinct_values": len(counts),
           "tied_units": sum(n for n in counts.values() if n > 1), "validation_size": validation_size,
           "degenerate": degenerate(len(counts), len(f_after), gamma)}
    if items_after:
        out["split_half_spearman"] = split_half(list(items_before), list(items_after))
    if changed_answers:
        out |= {"changed_answers_median": statistics.median(changed_answers),
                "changed_answers_min": min(changed_answers), "changed_answers_max": max(changed_answers)}
    return out
