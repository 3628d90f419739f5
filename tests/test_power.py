"""The power arithmetic of the reports: minimum detectable differences and the two-level bootstrap,
on hand-made numbers."""

import math
import statistics

import pytest
from scipy.stats import norm

from harness.report import power

# z_0.975 + z_0.8, the factor of every MDD at alpha 0.05 and power 0.8
Z = 1.959963984540054 + 0.8416212335729143


def test_the_mdd_factor_is_the_normal_quantiles():
    assert norm.ppf(0.975) + norm.ppf(0.8) == pytest.approx(Z, abs=1e-12)


def test_mdd_by_hand():
    # diffs (1, 0, 0, 1): mean 0.5, sample sd sqrt(1/3), n 4 -> 2.8015852181 * 0.5773502692 / 2
    diffs = [1.0, 0.0, 0.0, 1.0]
    assert statistics.stdev(diffs) == pytest.approx(math.sqrt(1 / 3), abs=1e-12)
    assert power.mdd(math.sqrt(1 / 3), 4) == pytest.approx(0.8087479899175993, abs=1e-9)
    assert power.paired_mdd(diffs, baseline=[0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.8087479899175993, abs=1e-9)
    # more items, smaller MDD: n 16 halves it
    assert power.mdd(math.sqrt(1 / 3), 16) == pytest.approx(0.8087479899175993 / 2, abs=1e-9)


def test_mdd_with_no_observed_difference_uses_the_baselines_own_variance():
    # every difference zero: sd_d = sqrt(2) * sd of the baseline's items, sd (1, 0, 0, 1) = sqrt(1/3)
    got = power.paired_mdd([0.0, 0.0, 0.0, 0.0], baseline=[1.0, 0.0, 0.0, 1.0])
    assert got == pytest.approx(Z * math.sqrt(2) * math.sqrt(1 / 3) / 2, abs=1e-9)
    assert got == pytest.approx(1.1437423758834482, abs=1e-9)
    assert power.paired_mdd([0.0, 0.0], baseline=[0.5, 0.5]) == 0.0  # no signal in either
    assert power.paired_mdd([0.25], baseline=[0.5]) is None  # one item: no SD


@pytest.mark.parametrize("values, zero, flat", [
    ([0.0, 0.0, 0.0], True, True),
    ([0.3 - 0.1 - 0.2, 0.0], True, True),  # float rounding of a zero difference is zero
    ([0.5, 0.5], False, True),
    ([0.0, 1.0], False, False),
])
def test_zero_and_constant(values, zero, flat):
    assert power.all_zero(values) is zero and power.constant(values) is flat


def test_interval_kind_names_the_missing_seed_variance_below_three_seeds():
    assert "seed variance not estimated" in power.interval_kind(1)
    assert "seed variance not estimated" in power.interval_kind(2)
    assert power.interval_kind(3).startswith("bootstrap over seeds and items")


DIFFS = [[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0, -1.0]]


def test_two_level_bootstrap_is_deterministic_and_covers_the_mean():
    first = power.two_level_bootstrap(DIFFS)
    assert power.two_level_bootstrap(DIFFS) == first
    assert power.two_level_bootstrap(DIFFS, seed=1) != first  # the seed is what fixes it
    mean = statistics.fmean(v for row in DIFFS for v in row)
    low, high, se = first
    assert low < mean < high and 0 < se < high - low and high - low < 2  # a percentile interval of means of values in [-1, 1]
    # a wider confidence, a wider interval
    wide = power.two_level_bootstrap(DIFFS, confidence=0.99)
    assert wide[0] <= low and wide[1] >= high


def test_two_level_bootstrap_resamples_seeds_too():
    # the seeds disagree wholesale (every item +1 in one, -1 in the other two): only resampling the
    # seeds shows it; items alone, each averaged over the seeds, are all -1/3 (an interval of width 0).
    # Three draws of the +1 seed have probability 1/27 > 2.5%, three of the others 8/27.
    seeds = [[1.0] * 6, [-1.0] * 6, [-1.0] * 6]
    assert power.two_level_bootstrap(seeds)[:2] == (pytest.approx(-1.0), pytest.approx(1.0))
