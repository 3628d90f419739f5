"""Reports: the paired-difference and cost arithmetic on hand-made numbers, then every table, the
leaderboard (schema, HTML in a real headless Chromium), the refusals and the regression check on the
smoke suite (tiny-fitted, two seeds, one influence budget point)."""

import json
import math
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pandas as pd
import pytest

from harness.cache import cache_root
from harness.cli import main
from harness.errors import HarnessError
from harness.report import costs, power, tables
from harness.report.build import CHECKOUT, Report, build
from harness.report.check import check, cpu_capability
from harness.report.leaderboard import SCHEMA, document, validate
from harness.experiment.suite import budget_points
from harness.records import cost, lock, manifest
from conftest import SMOKE_ARGS, SMOKE_TASKS

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "smoke-arc_c.json"


@pytest.mark.parametrize("diffs, diff, low, high, n", [
    ([1, 1], 1.0, 1.0, 1.0, 2),  # no spread: a zero-width interval (the display prints none)
    # sd of (1, 0, 0) over sqrt(3) is 1/3; t(0.975, 2) = 4.302653
    ([1, 0, 0], 1 / 3, (1 - 4.302653) / 3, (1 + 4.302653) / 3, 3),
    ([0.25], 0.25, None, None, 1),  # one item: no interval
    ([], None, None, None, 0),
])
def test_paired_difference(diffs, diff, low, high, n):
    got = tables.paired_difference(diffs)
    assert got["n"] == n
    for key, want in (("diff", diff), ("low", low), ("high", high)):
        assert got[key] == (None if want is None else pytest.approx(want, abs=1e-6))


class _Run:
    """A run record's numbers without its files: per-item scores per policy, and what its influence
    selections fell back to."""

    def __init__(self, label, seed, dpo, initial, fallbacks=()):
        self.task, self.budget, self.label, self.seed, self.path = "t", None, label, seed, f"{label}/{seed}"
        self.items = {"dpo": dpo, "initial": initial, "sft": initial}
        self.results = {"training": {"0": {"dpo_pairs": 4}}}
        self.fallbacks = list(fallbacks)

    def item_scores(self, which):
        return self.items[which]

    def score(self, which):
        values = list(self.items[which].values())
        return {"metric": "accuracy", "mean": statistics.fmean(values), "n": len(values), "tokens_per_dialogue": 9.0,
                "stderr": statistics.stdev(values) / math.sqrt(len(values))}

    def influence_fallbacks(self):
        return self.fallbacks


def _items(*scores):
    return {f"q{i}": float(v) for i, v in enumerate(scores)}


# Per seed: item scores of each policy on six items. random varies; qvalue matches it item for item;
# dits is ahead on every item; flat scores 0 everywhere, as does initial.
POLICIES = {"random": [(1, 0, 1, 0, 1, 1), (0, 0, 1, 1, 1, 0), (1, 1, 0, 0, 1, 0)],
            "qvalue": [(1, 0, 1, 0, 1, 1), (0, 0, 1, 1, 1, 0), (1, 1, 0, 0, 1, 0)],
            "optima_full": [(1, 0, 0, 1, 1, 1), (0, 1, 1, 0, 1, 1), (1, 0, 1, 1, 0, 0)],
            "dits:gamma=1": [(1, 1, 1, 1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1, 1, 1, 1)],
            "flat": [(0,) * 6] * 3}


def _suite(seeds, fallbacks=()):
    return [_Run(label, seed, _items(*per_seed[seed]), _items(*(0,) * 6), fallbacks if label.startswith("dits") else ())
            for label, per_seed in POLICIES.items() for seed in range(seeds)]


def test_comparison_carries_the_mdd_and_says_what_its_interval_covers():
    table = tables.comparison(_suite(2)).set_index("policy")
    # two seeds: t over items; the MDD from the SD of the seed-averaged differences
    diffs = [statistics.fmean(a - b for a, b in zip(s, r)) for s, r in
             zip(zip(*POLICIES["optima_full"][:2]), zip(*POLICIES["random"][:2]))]
    assert diffs == [0, 0.5, -0.5, 0, 0, 0.5]
    assert table.loc["optima_full", "vs_random_mdd"] == pytest.approx(
        2.8015852181129683 * statistics.stdev(diffs) / math.sqrt(6), abs=1e-9)
    assert table.loc["optima_full", "vs_random_sd"] == pytest.approx(statistics.stdev(diffs))
    assert (table.loc["optima_full", "vs_random_seeds"], table.loc["optima_full", "vs_random_n"]) == (2, 6)
    assert "seed variance not estimated" in table.loc["optima_full", "interval"]
    assert table.loc["random", "interval"] == table.loc["optima_full", "interval"]  # against optima_full and qvalue
    shown = tables.display(table.reset_index())
    assert "seed variance not estimated" in shown.to_markdown(index=False)
    # three seeds: the two-level bootstrap over the same items, in every seed
    table = tables.comparison(_suite(3)).set_index("policy")
    per_seed = [[a - b for a, b in zip(s, r)] for s, r in zip(POLICIES["optima_full"], POLICIES["random"])]
    assert (table.loc["optima_full", "vs_random_low"], table.loc["optima_full", "vs_random_high"]) == pytest.approx(
        power.two_level_bootstrap(per_seed)[:2])
    # and the MDD carries the seeds' variance as the interval does: from the bootstrap's standard error
    assert table.loc["optima_full", "vs_random_mdd"] == pytest.approx(
        2.8015852181129683 * power.two_level_bootstrap(per_seed)[2])
    assert table.loc["optima_full", "interval"].startswith("bootstrap over seeds and items")
    assert "seed variance not estimated" not in tables.display(table.reset_index()).to_markdown(index=False)


def test_display_says_what_is_not_resolved_not_observed_and_not_varying():
    table = tables.comparison(_suite(2), baselines=("random",))
    shown = tables.display(table, baselines=("random",)).set_index("policy")
    vs = shown["Δ vs random [95% CI]"]
    row = table.set_index("policy").loc["optima_full"]
    # optima_full against random: an interval across zero, then the MDD
    assert row["vs_random_low"] < 0 < row["vs_random_high"]
    assert vs["optima_full"] == (f"{row['vs_random']:+.4f} [{row['vs_random_low']:+.4f}, "
                                 f"{row['vs_random_high']:+.4f}] not resolved, MDD {row['vs_random_mdd']:.4f}")
    # initial (0 everywhere) against random: below it, resolved
    assert "not resolved" not in vs["initial"] and vs["initial"].startswith("-0.5833 [") and "MDD" in vs["initial"]
    # qvalue scored what random did on every item: no difference, and the MDD from random's own items,
    # sd_d = sqrt(2) * sd of its seed-averaged scores (1/2, 0, 1, 1/2, 1, 1/2)
    baseline = [0.5, 0, 1, 0.5, 1, 0.5]
    mdd = 2.8015852181129683 * math.sqrt(2) * statistics.stdev(baseline) / math.sqrt(6)
    assert vs["qvalue"] == f"no difference observed (MDD {mdd:.4f})"
    assert table.set_index("policy").loc["qvalue", "vs_random_mdd"] == pytest.approx(mdd, abs=1e-9)
    # dits ahead by 1 - random's score on each item: an interval with no "no difference" and no "no signal"
    assert "no difference" not in vs["dits:gamma=1"] and "[" in vs["dits:gamma=1"]
    # the policy that scored every item alike has no spread to show, only its one value
    assert shown.loc["flat", "score"] == "0.0000 (no signal: every item scores 0.0000)"
    assert shown.loc["initial", "score"] == "0.0000 (no signal: every item scores 0.0000)"
    assert shown.loc["dits:gamma=1", "score"] == "1.0000 (no signal: every item scores 1.0000)"
    assert "no signal" not in shown.loc["random", "score"] and "±" in shown.loc["random", "score"]
    assert all("no signal" not in v for v in vs)


def test_display_never_prints_an_interval_of_width_zero():
    both_flat = [_Run(label, s, _items(*(1,) * 4), _items(*(0,) * 4)) for label in ("random", "qvalue")
                 for s in range(2)]
    shown = tables.display(tables.comparison(both_flat, ("random",)), ("random",)).set_index("policy")
    # nothing varies in either: no MDD to give
    assert shown.loc["qvalue", "Δ vs random [95% CI]"] == "no difference observed (no signal in either)"
    # every item one worse: a difference, but no spread to put an interval on
    assert shown.loc["sft", "Δ vs random [95% CI]"] == "-1.0000 on every item (no spread: no interval)"
    assert shown.loc["random", "Δ vs random [95% CI]"] == "-"


def test_the_spread_is_over_items_and_seeds_sharing_one_evaluation_have_no_sd():
    shared = _items(1, 0, 1, 1, 0, 0)
    suite = [_Run("random", s, _items(*POLICIES["random"][s]), shared) for s in range(2)]
    table = tables.comparison(suite, ("random",)).set_index("policy")
    # the ± of every row: the standard error over items of the seed-averaged item scores
    averaged = [statistics.fmean(v) for v in zip(*POLICIES["random"][:2])]
    assert table.loc["random", "spread"] == pytest.approx(statistics.stdev(averaged) / math.sqrt(6))
    assert table.loc["initial", "spread"] == pytest.approx(statistics.stdev(shared.values()) / math.sqrt(6))
    # how far the seeds' means lie apart is its own column; one evaluation read twice has none
    assert table.loc["random", "seed_sd"] == pytest.approx(statistics.stdev([4 / 6, 3 / 6]))
    assert (table.loc["random", "evaluations"], table.loc["initial", "evaluations"]) == (2, 1)
    assert pd.isna(table.loc["initial", "seed_sd"]) and table.loc["initial", "seeds"] == 2
    shown = tables.display(table.reset_index(), ("random",)).set_index("policy")
    assert shown.loc["initial", "score"] == f"0.5000 ± {table.loc['initial', 'spread']:.4f}"
    assert shown.loc["initial", "sd over seeds"] == "one evaluation"
    assert shown.loc["random", "sd over seeds"] == f"{table.loc['random', 'seed_sd']:.4f}"
    one = tables.display(tables.comparison(suite[:1], ("random",)), ("random",)).set_index("policy")
    assert one.loc["random", "sd over seeds"] == "-"


def test_a_difference_over_fewer_seeds_than_its_rows_says_so():
    suite = [r for r in _suite(2) if not (r.label == "optima_full" and r.seed == 1)]
    shown = tables.display(tables.comparison(suite)).set_index("policy")
    # random has two seeds and optima_full one: their difference is seed 0's alone
    assert shown.loc["random", "Δ vs optima_full [95% CI]"].endswith("(on the 1 seed(s) both ran)")
    assert shown.loc["optima_full", "Δ vs random [95% CI]"].endswith("(on the 1 seed(s) both ran)")
    assert "seed(s) both ran" not in shown.loc["qvalue", "Δ vs random [95% CI]"]


def test_degenerate_influence_marks_the_row():
    shown = tables.display(tables.comparison(_suite(2, ["fell back to Q"]))).set_index("policy")
    assert shown.loc["dits:gamma=1", "notes"] == "influence degenerate: fell back to Q"
    assert (shown.drop(index="dits:gamma=1")["notes"] == "-").all()
    mixed = _suite(2) + [_Run("dits:gamma=0", s, _items(*(1,) * 6), _items(*(0,) * 6),
                              [None, "fell back to pool order"]) for s in range(2)]
    shown = tables.display(tables.comparison(mixed)).set_index("policy")
    assert shown.loc["dits:gamma=0", "notes"] == "influence degenerate: fell back to pool order in 2 of 4 selections"
    assert shown.loc["dits:gamma=1", "notes"] == "-"


def test_qvalue_is_a_default_baseline_declared_once():
    assert tables.BASELINES == ("optima_full", "random", "qvalue")
    assert "vs_qvalue_mdd" in tables.comparison(_suite(2)).columns


def _book(rows):
    return pd.DataFrame([{"task": "t", "policy": p, "seed": seed, "budget": "", "stage": "total", "cost_tokens": tok,
                          "cost_device_seconds": sec} for p, seed, tok, sec in rows])


def test_cost_per_gain_prices_the_paired_gain_by_the_extra_cost_on_the_same_seeds():
    # the comparison's differences against optima_full, on the seeds each pair shares
    table = pd.DataFrame([{"task": "t", "policy": p, "mean": 0.5, "vs_optima_full": d, "vs_optima_full_low": low}
                          for p, d, low in (("initial", -0.3, -0.4), ("optima_full", None, None), ("dits", 0.05, 0.01),
                                            ("random", -0.02, -0.05), ("qvalue", 0.02, -0.01), ("lonely", None, None))])
    book = _book([("optima_full", 0, 1000, 100.0), ("optima_full", 1, 1200, 110.0),
                  ("dits", 0, 1500, 160.0), ("dits", 1, 1700, 180.0), ("random", 0, 800, 90.0),
                  ("qvalue", 0, 900, 120.0), ("qvalue", 1, 1100, 115.0), ("lonely", 2, 10, 1.0)])
    got = costs.cost_per_gain(table, book, ("optima_full",)).set_index("policy")
    # dits: 5 points for 500 tokens and (60 + 70) / 2 seconds more, seed by seed
    assert (got.loc["dits", "extra_points"], got.loc["dits", "seeds"]) == (pytest.approx(5.0), 2)
    assert got.loc["dits", "extra_tokens"] == pytest.approx(500)
    assert got.loc["dits", "tokens_per_point"] == pytest.approx(100)
    assert got.loc["dits", "device_seconds_per_point"] == pytest.approx(13.0)
    assert got.loc["dits", "gain_resolved"] and not got.loc["qvalue", "gain_resolved"]
    # random ran seed 0 only: its extra cost is seed 0's, and with no gain there is no price
    assert (got.loc["random", "seeds"], got.loc["random", "extra_tokens"]) == (1, pytest.approx(-200))
    assert pd.isna(got.loc["random", "tokens_per_point"]) and not got.loc["random", "gain_resolved"]
    # qvalue gained 2 points for fewer tokens: no (negative) price in tokens; more seconds: a price
    assert pd.isna(got.loc["qvalue", "tokens_per_point"])
    assert got.loc["qvalue", "device_seconds_per_point"] == pytest.approx(12.5 / 2)
    # no seed in common, no comparison: no row; nor for the fixed policies and the baseline itself
    assert not {"lonely", "initial", "optima_full"} & set(got.index)


def test_cost_to_target_takes_the_cheapest_point_that_reaches_it():
    def point(policy, budget, mean, tokens, seconds):
        return {"task": "t", "policy": policy, "budget": budget, "mean": mean, "seeds": 1, "cost_tokens": tokens,
                "cost_device_seconds": seconds}

    points = pd.DataFrame([point("optima_full", "", 0.40, 40, 200.0),
                           point("dits", "select.validation_size=2", 0.30, 10, 50.0),
                           point("dits", "select.validation_size=8", 0.42, 20, 80.0),
                           point("dits", "", 0.45, 30, 120.0),
                           point("qvalue", "", 0.35, 5, 40.0)])
    got = costs.cost_to_target(points, "optima_full").set_index("policy")
    assert got.loc["dits", "budget"] == "select.validation_size=8" and got.loc["dits", "target_score"] == 0.40
    assert got.loc["dits", "cost_device_seconds"] == 80.0
    assert got.loc["dits", "device_seconds_share_of_target"] == pytest.approx(0.4)
    assert got.loc["dits", "tokens_share_of_target"] == pytest.approx(0.5)
    assert got.loc["optima_full", "device_seconds_share_of_target"] == pytest.approx(1.0)
    assert not got.loc["qvalue", "reached"] and pd.isna(got.loc["qvalue", "cost_tokens"])
    assert costs.cost_to_target(points, None).empty


@pytest.mark.parametrize("axes, points", [
    (["synth.questions=2,4"], [("synth.questions", "2"), ("synth.questions", "4")]),
    (["select.validation_size=4", "synth.explore_time=2"], [("select.validation_size", "4"),
                                                           ("synth.explore_time", "2")]),
])
def test_budget_points(axes, points):
    assert budget_points(axes) == points


@pytest.mark.parametrize("axis", ["questions=4", "run.sft.questions=4", "synth.questions="])
def test_bad_budget_axes_are_refused(axis):
    with pytest.raises(HarnessError, match="expected synth.KEY=V1,V2"):
        budget_points([axis])


@pytest.fixture(scope="module")
def report(smoke_suite):
    return build(str(smoke_suite))


def test_comparison_pairs_the_same_test_items_across_seeds(report):
    table = report.comparison.set_index("policy")
    assert list(table.index) == ["initial", "sft", "optima_full", "random", "qvalue", "dits:gamma=0", "dits:gamma=1"]
    assert set(table["seeds"]) == {2}
    # the seeds share the initial evaluation: the seed does not change ARC-C's questions
    assert table.loc["initial", "evaluations"] == 1 and pd.isna(table.loc["initial", "seed_sd"])
    runs = {(r.label, r.seed): r for r in report.runs if r.budget is None}
    for policy in ("qvalue", "dits:gamma=0", "initial"):
        # the mean of paired differences is the difference of the means on the same items
        mine = [runs[(policy if policy != "initial" else "random", s)].score(
            "initial" if policy == "initial" else "dpo")["mean"] for s in (0, 1)]
        base = [runs[("random", s)].score("dpo")["mean"] for s in (0, 1)]
        assert table.loc[policy, "vs_random"] == pytest.approx(sum(mine) / 2 - sum(base) / 2)
        # the items repeat in both seeds: each item's differences are averaged, items are the draws
        assert table.loc[policy, "vs_random_n"] == table.loc[policy, "questions"]
        assert table.loc[policy, "vs_random_low"] <= table.loc[policy, "vs_random"] <= table.loc[policy, "vs_random_high"]
    assert pd.isna(table.loc["random", "vs_random"]) and table.loc["optima_full", "vs_optima_full_n"] == 0
    # qvalue is a baseline too; two seeds: the interval is over items only, and says so
    assert table.loc["dits:gamma=0", "vs_qvalue_n"] == table.loc["dits:gamma=0", "questions"]
    assert pd.isna(table.loc["qvalue", "vs_qvalue"]) and set(table["vs_random_seeds"]) == {0, 2}
    assert all("seed variance not estimated" in kind for kind in table["interval"])
    assert pd.isna(table.loc["initial", "pairs_trained"]) and table.loc["optima_full", "pairs_trained"] > 0


def test_work_a_stage_did_but_did_not_record_is_unknown_not_zero():
    def stage(label, name, work):
        return {"stage": label, "name": name, "shared": False, "device": "cpu", "wall_seconds": 1.0, "cost": work}

    older = SimpleNamespace(task="t", label="random", seed=0, budget=None, traits={"influence": False}, stages=[
        stage("it0/sft", "sft", {"trained_tokens": 50, "steps": 4}), stage("it0/dpo", "dpo", {"steps": 2}),
        stage("it0/eval", "eval", {"completion_tokens": 9})])
    book = costs.ledger([older]).set_index("stage")
    # DPO before it counted its tokens: unknown, and so is the run's total; an evaluation trains nothing
    assert pd.isna(book.loc["it0/dpo", "trained_tokens"]) and pd.isna(book.loc["total", "trained_tokens"])
    assert book.loc["it0/eval", "trained_tokens"] == 0 and book.loc["total", "training_steps"] == 6


def test_cost_ledger_totals_and_shared_stages(report):
    book = report.ledger
    stages = book[book["stage"] != "total"]
    for (label, seed, budget), rows in stages.groupby(["policy", "seed", "budget"]):
        total = book[(book["stage"] == "total") & (book["policy"] == label) & (book["seed"] == seed)
                     & (book["budget"] == budget)]
        assert len(total) == 1 and total["wall_seconds"].iloc[0] == pytest.approx(rows["wall_seconds"].sum())
    one = book[(book["policy"] == "dits:gamma=1") & (book["seed"] == 0) & (book["budget"] == "")]
    total = one[one["stage"] == "total"].iloc[0]
    parts = one[one["stage"] != "total"]
    for column in ("generated_tokens", "prompt_tokens", "training_steps", "wall_seconds"):
        assert total[column] == pytest.approx(parts[column].sum())
    assert total["cost_device_seconds"] == pytest.approx(parts[parts["training"]]["device_seconds"].sum())
    categories = dict(zip(parts["stage"], parts["category"]))
    assert categories["it0/select"] == "influence estimation" and categories["it0/mcts"] == "tree search"
    select = parts[parts["stage"] == "it0/select"].iloc[0]
    assert select["influence_units"] > 0 and select["validation_dialogues"] > 0
    # the stages before selection are shared: the same recorded cost in every run of a seed
    mcts = stages[(stages["stage"] == "it0/mcts") & (stages["seed"] == 0)]
    assert mcts["rollouts"].nunique() == 1 and mcts["wall_seconds"].nunique() == 1 and mcts["rollouts"].iloc[0] > 0
    # gamma 0 and 1 share one cached influence estimate: each is charged its full seconds
    dits_select = stages[stages["policy"].str.startswith("dits") & (stages["stage"] == "it0/select")
                         & (stages["seed"] == 0) & (stages["budget"] == "")]
    assert len(dits_select) == 2 and (dits_select["device_seconds"] >= select["influence_seconds"]).all()
    # the one that reused it is charged the seconds it took where it was computed
    extra = sorted(dits_select["device_seconds"] - dits_select["wall_seconds"])
    assert extra == pytest.approx([0.0, select["influence_seconds"]])
    random_select = stages[(stages["policy"] == "random") & (stages["stage"] == "it0/select")].iloc[0]
    assert random_select["category"] == "selection" and random_select["influence_units"] == 0


def test_budget_runs_are_curve_points_not_table_rows(report):
    points = report.curve_points
    budgets = points[points["budget"] != ""]
    assert set(budgets["policy"]) == {"dits:gamma=0", "dits:gamma=1"}
    assert set(budgets["budget"]) == {"select.validation_size=2"} and set(budgets["seeds"]) == {2}
    assert len(points[points["budget"] == ""]) == 5


def test_report_writes_every_table_in_four_formats_and_the_plots(smoke_suite, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--suite", str(smoke_suite), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Δ vs optima_full [95% CI]" in printed and "dits:gamma=0" in printed
    for name in ("comparison", "cost_ledger", "cost_totals", "cost_per_gain", "cost_to_target", "curve_points",
                 "influence"):
        for ext in ("md", "csv", "json", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    # one row per influence selection (two DITS labels x two seeds, and their budget points), each
    # with its resolution as its selection recorded it
    influence = pd.read_csv(out / "influence.csv")
    assert set(influence["policy"]) == {"dits:gamma=0", "dits:gamma=1"} and len(influence) == 8
    assert (influence["distinct_values"] <= influence["units"]).all() and "split_half_spearman" in influence
    numbers = pd.read_csv(out / "comparison.csv")
    assert list(numbers["policy"])[:3] == ["initial", "sft", "optima_full"] and numbers["mean"].between(0, 1).all()
    tex = (out / "comparison.tex").read_text()
    # LaTeX's specials escaped: an unescaped % would comment out the rest of the header row
    assert "\\pm" in tex and "95\\%" in tex and "optima\\_full" in tex and "optima_full" not in tex
    shown = (out / "comparison.md").read_text()
    assert "seed variance not estimated" in shown and "MDD" in shown
    # other baselines: their differences instead
    assert main(["report", "--suite", str(smoke_suite), "--out", str(tmp_path / "vs_q"), "--baselines", "qvalue"]) == 0
    printed = capsys.readouterr().out
    assert "Δ vs qvalue [95% CI]" in printed and "Δ vs random" not in printed
    # a report never writes over the suite's records
    assert main(["report", "--suite", str(smoke_suite), "--out", str(smoke_suite)]) == 2
    assert main(["leaderboard", "--suite", str(smoke_suite), "--publish", str(smoke_suite.parent)]) == 2
    assert "would replace the suite's own records" in capsys.readouterr().err
    # nor over a folder that is not an earlier report; an earlier report it replaces whole
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub" / "notes.txt").write_text("mine")
    assert main(["report", "--suite", str(smoke_suite), "--out", str(precious)]) == 2
    assert "not a report's" in capsys.readouterr().err and (precious / "sub" / "notes.txt").read_text() == "mine"
    (out / "stale.txt").write_text("from an older report")
    assert main(["report", "--suite", str(smoke_suite), "--out", str(out)]) == 0
    assert not (out / "stale.txt").exists() and (out / "comparison.json").is_file()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["arc_c_dits_influence_by_iteration.png", "arc_c_dits_q_vs_influence.png", "arc_c_metric_vs_cost.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_leaderboard_schema_accepts_ours_and_rejects_broken_documents(report):
    doc = json.loads(json.dumps(document(report)))
    validate(doc)
    # one test question has no standard error: null, not a refusal
    validate({**doc, "comparison": [{**doc["comparison"][0], "spread": None}]})
    with pytest.raises(HarnessError, match="leaderboard.json: comparison/0/spread: -1 is less than"):
        validate({**doc, "comparison": [{**doc["comparison"][0], "spread": -1}]})
    for broken in ({**doc, "reported": {**doc["reported"], "status": "reproduced"}},
                   {**doc, "comparison": [{**doc["comparison"][0], "spread": -1}]},
                   {**doc, "runs": []},
                   {k: v for k, v in doc.items() if k != "cost_per_gain"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


@pytest.mark.parametrize("flag, value, message", [
    ("--baselines", "qvalue,randm", "--baselines randm: not a policy of"),
    # a reference row has no item scores to pair with
    ("--baselines", "reference: chance", "--baselines reference: chance: not a policy of"),
    # initial and SFT-only are rows of the comparison, not points of the cost curves
    ("--target", "sft", "--target sft: not a trained policy of"),
])
def test_report_refuses_baselines_and_targets_it_cannot_use(smoke_suite, tmp_path, capsys, flag, value, message):
    assert main(["report", "--suite", str(smoke_suite), "--out", str(tmp_path / "r"), flag, value]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()


def _copy(suite, tmp_path):
    return Path(shutil.copytree(suite, tmp_path / suite.name))


def test_leaderboard_refuses_unfinished_and_mismatched_runs(smoke_suite, tmp_path, capsys):
    copy = _copy(smoke_suite, tmp_path)
    run = next(p for p in copy.iterdir() if p.name.startswith("run:selector=qvalue") and ",seed=1," in p.name)
    status = run / "status.json"
    status.write_text(json.dumps({"state": "running", "stage": "it0/dpo", "time": 0}))
    with lock.hold(run):  # a live process works in it
        assert main(["leaderboard", "--suite", str(copy)]) == 2
    assert "the run is unfinished (running at stage it0/dpo)" in capsys.readouterr().err
    # it says running, but no process holds it: killed while it ran
    assert main(["leaderboard", "--suite", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "the run is unfinished (interrupted at stage it0/dpo)" in err and not (copy / "leaderboard").exists()
    status.write_text(json.dumps({"state": "complete", "stage": None, "time": 0}))
    spec = json.loads((run / "run_spec.json").read_text())
    spec["config"]["run"]["sft"]["lr"] = 0.1
    spec["config"]["run"]["dpo"]["lr"] = 0.1  # a training key: not shared stages, but what is compared
    (run / "run_spec.json").write_text(json.dumps(spec))
    assert main(["leaderboard", "--suite", str(copy)]) == 2
    assert "differ in run.dpo.lr, run.sft.lr" in capsys.readouterr().err and not (copy / "leaderboard").exists()


def _cut_lines(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:1]))


@pytest.mark.parametrize("file, damage, message", [
    ("results.json", lambda p: p.write_text('{"task": '), "results.json: not valid JSON (Expecting value"),
    ("results.json", lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                                        if k != "task"})), "results.json: no 'task' key"),
    ("status.json", lambda p: p.write_text("{"), "status.json: not valid JSON"),
    ("it0/eval/per_instance.jsonl", _cut_lines, "per_instance.jsonl: 1 distinct items, but"),
])
def test_damaged_records_are_one_line_naming_the_file(smoke_suite, tmp_path, capsys, file, damage, message):
    copy = _copy(smoke_suite, tmp_path)
    run = next(p for p in copy.iterdir() if p.name.startswith("run:selector=qvalue") and ",seed=1," in p.name)
    damage(run / file)
    assert main(["report", "--suite", str(copy), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run.name) in err and "Traceback" not in err and not (tmp_path / "out").exists()


def _as_older_records(suite: Path) -> None:
    """Make a suite's records read as commit a80c8ba wrote them: no schema_version, no selector
    traits, no manifests or cost records, ledger lines without schema_version."""
    for path in suite.rglob("run_spec.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("schema_version", "selector_traits")}))
    for path in [*suite.rglob(manifest.FILE), *suite.rglob(cost.FILE)]:
        path.unlink()
    for path in suite.rglob("ledger.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "schema_version"}) + "\n" for r in rows))


def test_older_records_give_the_same_report_and_are_not_resumed(smoke_suite, report, tmp_path, capsys):
    copy = _copy(smoke_suite, tmp_path)
    finished = sorted(p.parent for p in copy.glob("*/results.json"))
    assert len(finished) == 14 and all(main(["validate", "--run", str(run)]) == 0 for run in finished)
    assert all(manifest.problem(p.parent) is None for p in copy.rglob(cost.FILE))
    _as_older_records(copy)
    older = build(str(copy))
    for name, (numbers, _) in report.tables().items():
        pd.testing.assert_frame_equal(older.tables()[name][0], numbers, obj=name)
    capsys.readouterr()
    assert main(["run", *SMOKE_ARGS, "--selector", "qvalue", "--out", str(copy), "--resume"]) == 2
    assert "written by an older harness (no schema_version in run_spec.json)" in capsys.readouterr().err
    assert main(["validate", "--run", str(finished[0])]) == 2


class _Rows(HTMLParser):
    """The cell texts of the rows of one table in a dumped DOM."""

    def __init__(self, table_id):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.inside = dict(attrs).get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def _dump_dom(page: Path, fragment: str) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/install.sh installs it)")
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={page.parent / '.chromium'}", "--virtual-time-budget=2000", "--dump-dom",
         page.as_uri() + fragment], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def test_leaderboard_page_sorts_in_headless_chromium(smoke_suite, tmp_path, capsys):
    copy = _copy(smoke_suite, tmp_path)
    published = tmp_path / "results"
    assert main(["leaderboard", "--suite", str(copy), "--publish", str(published)]) == 0
    out = published / copy.name
    doc = json.loads((out / "leaderboard.json").read_text())
    validate(doc)
    assert doc["reported"]["status"] == "reported, not reproduced" and len(doc["plots"]) == 3
    assert "Reported by the paper (reported, not reproduced)" in (out / "leaderboard.md").read_text()
    page = out / "leaderboard.html"
    rows = {}
    for direction in ("asc", "desc"):
        parser = _Rows("comparison")
        parser.feed(_dump_dom(page, f"#sort=policy:{direction}"))
        header, *body = parser.rows
        rows[direction] = [row[header.index("policy")] for row in body]
    assert rows["asc"] == sorted(rows["asc"]) and rows["desc"] == rows["asc"][::-1]
    assert len(rows["asc"]) == 7
    parser = _Rows("reported")
    parser.feed(_dump_dom(page, ""))
    assert ["CBT" in " ".join(r) or "cbt" in r for r in parser.rows[1:]].count(True) >= 7
    assert all((out / p).is_file() for p in doc["plots"])


def test_published_records_rebuild_the_report_and_name_no_folder_of_this_machine(smoke_suite, tmp_path, capsys):
    copy = _copy(smoke_suite, tmp_path)
    published = tmp_path / "results"
    assert main(["leaderboard", "--suite", str(copy), "--publish", str(published)]) == 0
    records = published / copy.name / "runs"
    assert not list(records.rglob("*.safetensors")) and build(str(records)).comparison.equals(build(str(copy)).comparison)
    text = "".join(p.read_text() for p in records.rglob("*.json*"))
    assert "$HARNESS_CACHE/models/tiny-fitted" in text and f'"{copy.name}/shared/' in text
    for folder in (cache_root(), smoke_suite, tmp_path, CHECKOUT / "harness"):
        assert str(folder) not in text
    # the code that ran the runs beside the code that wrote the report
    doc = json.loads((published / copy.name / "leaderboard.json").read_text())
    assert {r["git_sha"] for r in doc["runs"]} == {json.loads((r / "run_spec.json").read_text())["git_sha"]
                                                  for r in copy.glob("run:*")}
    assert "runs at git " in (published / copy.name / "leaderboard.md").read_text()


def test_a_suite_is_named_as_its_runs_recorded_it_not_by_its_folder():
    def named(folder, *names):
        runs = [SimpleNamespace(config={"run": {"suite": n}}) for n in names]
        return Report.name.fget(SimpleNamespace(runs=runs, suite=Path(folder)))

    assert named("results/cbt-cpu/runs", "cbt-cpu", "cbt-cpu") == "cbt-cpu"  # a publication's records
    assert named("tmp/suite0", "default") == "suite0"  # run with --out: the default name says nothing
    assert named("tmp/mixed", "a", "b") == "mixed"


def test_check_passes_against_the_recorded_reference_and_fails_below_it(smoke_suite, tmp_path, capsys):
    assert main(["check", "--suite", str(smoke_suite), "--against", str(REFERENCE)]) == 0
    assert "check passed" in capsys.readouterr().out
    reference = json.loads(REFERENCE.read_text())
    raised = reference | {"scores": [s | {"mean": s["mean"] + 0.5} if s["policy"] == "qvalue" else s
                                     for s in reference["scores"]]}
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(raised))
    assert main(["check", "--suite", str(smoke_suite), "--against", str(worse)]) == 1
    captured = capsys.readouterr()
    assert "check failed: 1 of 7 scores" in captured.err and "FAIL" in captured.out
    blessed = tmp_path / "blessed.json"
    assert main(["check", "--suite", str(smoke_suite), "--against", str(blessed), "--bless", "--tolerance", "0"]) == 0
    assert main(["check", "--suite", str(smoke_suite), "--against", str(blessed)]) == 0
    # another machine's reference, merged: each score the lower of the two, both machines listed
    assert main(["check", "--suite", str(smoke_suite), "--against", str(worse), "--bless", "--keep-lowest"]) == 0
    merged = json.loads(worse.read_text())
    ours = {s["policy"]: s["mean"] for s in json.loads(blessed.read_text())["scores"]}
    theirs = {s["policy"]: s["mean"] for s in raised["scores"]}
    assert {s["policy"]: s["mean"] for s in merged["scores"]} == {p: min(ours[p], theirs[p]) for p in ours}
    assert len(merged["machines"]) == 1 + len(raised.get("machines", []))
    assert main(["check", "--suite", str(smoke_suite), "--against", str(worse)]) == 0
    # merging never drops a row this suite lacks; a first --keep-lowest simply writes the reference
    extra = {"task": "arc_c", "policy": "loss_influence", "metric": "accuracy", "mean": 0.1, "tolerance": 0.0}
    worse.write_text(json.dumps(merged | {"scores": [*merged["scores"], extra]}))
    assert main(["check", "--suite", str(smoke_suite), "--against", str(worse), "--bless", "--keep-lowest"]) == 0
    assert extra in json.loads(worse.read_text())["scores"]
    first = tmp_path / "first.json"
    assert main(["check", "--suite", str(smoke_suite), "--against", str(first), "--bless", "--keep-lowest"]) == 0
    assert len(json.loads(first.read_text())["scores"]) == 7


# tiny-fitted scores F1 0 on the QA tasks' 8 sample test items (it answers with names from its train
# split), and a row blessed at 0 guards nothing: those runs are checked to finish only.
UNREFERENCED = ("hotpotqa", "2wmh", "triviaqa")


@pytest.mark.parametrize("task", SMOKE_TASKS)
def test_smoke_runs_every_task_at_or_above_its_reference(smoke_tasks, task, capsys):
    results = json.loads(next((smoke_tasks / task).glob("run:*/results.json")).read_text())
    assert results["training"]["it0"]["dpo_pairs"] > 0  # the search kept pairs and DPO trained on them
    reference = REFERENCE.parent / f"smoke-{task}.json"
    assert reference.exists() != (task in UNREFERENCED)
    if reference.exists():
        assert main(["check", "--suite", str(smoke_tasks / task), "--against", str(reference)]) == 0
        assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted(REFERENCE.parent.glob("smoke-*.json")), ids=lambda p: p.stem)
def test_every_blessed_row_guards_something(path):
    """A row blessed at 0 (its lowest score on any listed machine) passes whatever the harness does."""
    rows = json.loads(path.read_text())["scores"]
    assert all(row["mean"] - row["tolerance"] > 0 for row in rows), [r for r in rows if r["mean"] <= r["tolerance"]]


def test_the_blessing_machines_cpu_capability_is_torchs_read_without_torch(monkeypatch):
    import torch

    assert cpu_capability() == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # torch's override, obeyed as torch obeys it
    assert cpu_capability() == "AVX2"


def test_check_reports_missing_rows_and_bad_reference_files(report, tmp_path, capsys):
    result = check(report.comparison, [{"task": "arc_c", "policy": "loss_influence", "metric": "accuracy",
                                        "mean": 0.1, "tolerance": 0.0}])
    assert list(result["status"]) == ["missing"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scores": [{"task": "arc_c", "policy": "random"}]}))
    assert main(["check", "--suite", str(report.suite), "--against", str(bad)]) == 2
    assert "scores[0]: missing key 'metric'" in capsys.readouterr().err
