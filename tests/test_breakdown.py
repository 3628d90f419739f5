"""An evaluation's breakdown by its questions' labels (WebWalkerQA's difficulty, hop, language and
domain): each cell's figures are the summary of exactly its records, by hand-computed cases."""

import math

import pytest

from harness.evaluation import breakdown, breakdown_table, summary


def record(score, difficulty, hop, *, answered=True, tokens=10, turns=2, stop="answer", pages=None, sources=None,
           judge=None):
    r = {"score": score, "answered": answered, "tokens": tokens, "turns": turns, "stop": stop,
         "labels": {"difficulty_level": difficulty, "hop": hop}}
    if pages is not None:
        r["trajectory"] = {"pages": pages, "sources": sources[1], "sources_opened": sources[0]}
    if judge is not None:
        r["judge"] = {"correct": judge}
    return r


RECORDS = [
    record(1.0, "easy", "single_source", tokens=20, turns=4, pages=3, sources=(1, 1), judge=True),
    record(0.0, "easy", "multi_source", answered=False, tokens=40, turns=6, stop="max_turns", pages=5,
           sources=(1, 2), judge=False),
    record(0.5, "hard", "multi_source", tokens=30, turns=5, stop="agreement", pages=1, sources=(0, 2), judge=True),
    record(0.0, None, "single_source", tokens=10, turns=2, pages=2, sources=(0, 0), judge=False),  # unlabelled
]


@pytest.mark.parametrize("label, value, n, mean, answered, tokens, pages, all_sources, judge", [
    ("difficulty_level", "easy", 2, 0.5, 0.5, 30.0, 4.0, 0.5, 0.5),
    ("difficulty_level", "hard", 1, 0.5, 1.0, 30.0, 1.0, 0.0, 1.0),
    ("difficulty_level", None, 1, 0.0, 1.0, 10.0, 2.0, None, 0.0),  # no source page to open: no rate
    ("hop", "multi_source", 2, 0.25, 0.5, 35.0, 3.0, 0.0, 0.5),
    ("hop", "single_source", 2, 0.5, 1.0, 15.0, 2.5, 1.0, 0.5),
])
def test_each_cell_summarises_exactly_its_records(label, value, n, mean, answered, tokens, pages, all_sources, judge):
    rows = breakdown(RECORDS, ("difficulty_level", "hop"))
    assert [(r["label"], r["value"]) for r in rows] == [
        ("difficulty_level", None), ("difficulty_level", "easy"), ("difficulty_level", "hard"),
        ("hop", "multi_source"), ("hop", "single_source")]
    row = next(r for r in rows if (r["label"], r["value"]) == (label, value))
    assert (row["n"], row["mean"], row["answered_rate"], row["mean_tokens_per_dialogue"], row["mean_pages"],
            row["sources_opened_rate"], row["judge_accuracy"]) == (n, mean, answered, tokens, pages, all_sources, judge)
    assert sum(r["n"] for r in rows if r["label"] == label) == len(RECORDS)


def test_the_summary_of_all_records_is_the_evaluation_s_own():
    s = summary(RECORDS)
    assert (s["n"], s["mean"], s["mean_turns"], s["agreement_rate"]) == (4, 0.375, 4.25, 0.25)
    assert s["stderr"] == pytest.approx(math.sqrt(sum((x - 0.375) ** 2 for x in (1, 0, 0.5, 0)) / 3 / 4))
    assert "mean_norm" not in s  # no record was scored per option
    plain = [{k: v for k, v in r.items() if k not in ("trajectory", "judge")} for r in RECORDS]
    assert not {"mean_pages", "sources_opened_rate", "judge_accuracy"} & set(summary(plain))


def test_the_table_shows_a_cell_s_missing_figures_as_dashes():
    lines = breakdown_table(breakdown(RECORDS, ("difficulty_level",)), "f1").splitlines()
    header, *cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]
    assert header == ["label", "value", "n", "f1", "± stderr", "answered", "tokens/dialogue", "turns", "pages",
                      "all sources opened", "judge acc"]
    by_value = {c[1]: dict(zip(header, c)) for c in cells}
    assert by_value["hard"]["± stderr"] == "-"  # one item: no stderr
    assert by_value["-"]["all sources opened"] == "-"  # unlabelled, and no source page to open
    assert by_value["easy"]["f1"] == "0.5000" and by_value["easy"]["pages"] == "4.0"
