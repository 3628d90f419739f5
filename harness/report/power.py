"""How small a difference a comparison can see, and its interval when seeds vary too.

Minimum detectable difference (MDD) of a paired comparison, two-sided test at level alpha with
power 1 - beta, normal approximation:

    MDD = (z_{1 - alpha/2} + z_{1 - beta}) * sd_d / sqrt(n)

sd_d the standard deviation of the n per-item differences (each item's differences averaged over
the seeds). From `MIN_SEEDS_FOR_SEED_VARIANCE` seeds on, the interval carries the seeds' variance too,
so the MDD does as well: the bootstrap's standard error of the mean difference replaces sd_d / sqrt(n). With alpha 0.05 and power 0.8 the factor is 1.959964 + 0.841621 = 2.801585. A true
difference smaller than the MDD is more likely missed than found, so a difference that is "not
resolved" says little unless the MDD is small.

Intervals: with fewer than `MIN_SEEDS_FOR_SEED_VARIANCE` seeds there is no usable estimate of how
much the seeds move a policy, so the interval is over items given the seeds; from there on a
two-level bootstrap (seeds with replacement, then items with replacement) carries both.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from scipy import stats as scistats

ALPHA = 0.05
POWER = 0.8
CONFIDENCE = 1 - ALPHA
MIN_SEEDS_FOR_SEED_VARIANCE = 3
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # one fixed stream: the same records give the same table
# Scores are averaged over seeds before they are compared: differences this small are float rounding.
TIE = 1e-12


def mdd(sd_d: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """(z_{1-alpha/2} + z_power) * sd_d / sqrt(n): the paired difference a two-sided test at `alpha`
    finds with probability `power`."""
    z = scistats.norm.ppf(1 - alpha / 2) + scistats.norm.ppf(power)
    return float(z * sd_d / math.sqrt(n))


def paired_mdd(diffs: list[float], baseline: list[float]) -> float | None:
    """The MDD of per-item differences `diffs` (seed-averaged, one per item). Where every difference
    is zero their SD says nothing about the noise, so the baseline's own per-item scores stand in:
    two independent draws of that SD differ with SD sqrt(2) * sd. None below two items."""
    if len(diffs) < 2:
        return None
    sd_d = statistics.stdev(diffs)
    if all_zero(diffs):
        sd_d = math.sqrt(2) * statistics.stdev(baseline)
    return mdd(sd_d, len(diffs))


def all_zero(values: list[float]) -> bool:
    return all(abs(v) <= TIE for v in values)


def constant(values: list[float]) -> bool:
    """Every value the same (up to float rounding): nothing to rank or spread."""
    return max(values) - min(values) <= TIE


def interval_kind(seeds: int) -> str:
    """What the interval of a comparison over `seeds` paired seeds covers."""
    if seeds < MIN_SEEDS_FOR_SEED_VARIANCE:
        return "t over items given the seeds: seed variance not estimated"
    return f"bootstrap over seeds and items ({RESAMPLES} resamples)"


def two_level_bootstrap(diffs: list[list[float]], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                        seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Percentile interval of the mean paired difference and the resampled means' standard deviation
    (its standard error), `diffs[s][i]` the difference on item i in seed s (the same items in every seed). Each resample draws the seeds with replacement, then the
    items with replacement, and averages over both: seeds and items are both draws from larger
    populations, and resampling only items would treat the seeds as fixed."""
    table = np.asarray(diffs, dtype=float)
    n_seeds, n_items = table.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        per_item = table[rng.integers(0, n_seeds, n_seeds)].mean(axis=0)
        means[b] = per_item[rng.integers(0, n_items, n_items)].mean()
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high), float(means.std(ddof=1))
