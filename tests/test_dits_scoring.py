"""The DITS influence arithmetic, table-driven."""

import pytest

from harness.dits.scoring import combined, degenerate, influence, minmax, resolution, spearman, split_half


@pytest.mark.parametrize("f_after, f_before, eps, expected", [
    ([0.5, 0.4, 0.6], 0.5, 1.0, [0.0, -0.1, 0.1]),
    ([0.5, 0.4, 0.6], 0.5, 1e-3, [0.0, -100.0, 100.0]),
    ([0.2], 0.2, 5e-4, [0.0]),
])
def test_influence_is_the_metric_change_per_step_size(f_after, f_before, eps, expected):
    assert influence(f_after, f_before, eps) == pytest.approx(expected)


def test_influence_needs_a_positive_step():
    with pytest.raises(ValueError, match="epsilon must be positive"):
        influence([0.1], 0.0, 0.0)


@pytest.mark.parametrize("values, expected", [
    ([0.0, -100.0, 100.0], [0.5, 0.0, 1.0]),
    ([3.0, 3.0], [0.0, 0.0]),
    ([7.0], [0.0]),
])
def test_minmax(values, expected):
    assert minmax(values) == pytest.approx(expected)


@pytest.mark.parametrize("gamma, expected", [
    (0.0, [0.5, 0.0, 1.0]),  # influence alone
    (1.0, [0.5 + 0.9, 0.0 + 0.5, 1.0 + 0.45]),  # the reference: minmax(I) + raw Q
])
def test_combined_score(gamma, expected):
    assert combined([0.0, -100.0, 100.0], [0.9, 0.5, 0.45], gamma) == pytest.approx(expected)


def test_resolution_counts_distinct_values_ties_and_changed_answers():
    r = resolution([0.2, 0.2, 0.3, 0.25, 0.3], [0, 2, 5, 1, 4], validation_size=20, gamma=1.0)
    assert (r["distinct_values"], r["tied_units"], r["degenerate"]) == (3, 4, None)
    assert (r["changed_answers_median"], r["changed_answers_min"], r["changed_answers_max"]) == (2, 0, 5)
    assert resolution([0.2, 0.3], [1, 4], validation_size=20, gamma=1.0)["changed_answers_median"] == 2.5
    # no dialogues after a step
    assert "changed_answers_median" not in resolution([0.2, 0.3], [], validation_size=20, gamma=1.0)


@pytest.mark.parametrize("f_after, gamma, expected", [
    ([0.2, 0.2, 0.2, 0.3, 0.3, 0.3], 1.0, "fell back to Q"),  # 6 units, 2 distinct values
    ([0.2, 0.2, 0.2, 0.3, 0.3, 0.3], 0.0, "fell back to pool order"),
    ([0.5, 0.5, 0.5], 1.0, "fell back to Q"),  # one value for three units: the cbt-cpu suite's estimate
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1.0, None),  # 6 distinct values
    ([0.1, 0.1, 0.2, 0.2, 0.3, 0.3], 0.0, None),  # 3 of 6: half the units is enough
    ([0.4, 0.4], 1.0, "fell back to Q"),  # not fewer than half, but one value ranks nothing (the smoke suite's)
    ([0.4, 0.5], 0.0, None),
    ([0.4], 0.0, None),
])
def test_degenerate_influence_says_what_selection_fell_back_to(f_after, gamma, expected):
    assert resolution(f_after, [], validation_size=20, gamma=gamma)["degenerate"] == expected
    assert degenerate(len(set(f_after)), len(f_after), gamma) == expected


@pytest.mark.parametrize("x, y, rho", [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
    ([1, 2, 3], [1, 3, 2], 0.5),  # 1 - 6 * (0 + 1 + 1) / (3 * 8)
    ([1, 1, 1], [1, 2, 3], None),  # a constant estimate ranks nothing
    ([1, 2, 3], [0, 0, 0], None),
])
def test_spearman(x, y, rho):
    from harness.dits.analyze import spearman

    assert spearman(x, y) == (None if rho is None else pytest.approx(rho))


@pytest.mark.parametrize("x, y", [
    ([1, 2, 3, 4], [10, 20, 30, 40]),
    ([1, 2, 3, 4], [4, 3, 2, 1]),
    ([0.1, 0.1, 0.3, 0.2, 0.5], [1, 0, 1, 1, 2]),  # ties on both sides
    ([3, 1, 2, 5, 4, 4], [0.5, 0.2, 0.2, 0.9, 0.1, 0.3]),
])
def test_spearman_matches_scipy(x, y):
    from scipy import stats

    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


@pytest.mark.parametrize("before, after, expected", [
    # even questions (0, 2) and odd ones (1, 3) rank the three units alike: rho 1
    ([0, 0, 0, 0], [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], 1.0),
    # the halves rank them in opposite orders
    ([0, 0, 0, 0], [[1, 0, 1, 0], [0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]], -1.0),
    ([0, 0, 0, 0], [[1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]], None),  # the odd half gives one value
    ([0, 0], [[1, 0], [0, 1]], None),  # two units: no reliability to speak of
])
def test_split_half_reliability(before, after, expected):
    got = split_half(before, after)
    assert got == (None if expected is None else pytest.approx(expected))
    if after and len(after) >= 3:
        assert resolution([0.0] * len(after), [], len(before), 1.0, before, after)["split_half_spearman"] == got
