"""Selector arithmetic and `harness select` on hand-written pools."""

import json

import pytest

from harness.cli import main
from harness.config import SelectConfig
from harness.errors import HarnessError
from harness.selection import budget, rank, run_select, select


def pool(qs, task="hotpotqa"):
    return [{"pair_id": f"t:q{i}/n0", "question_id": f"q{i}", "task": task, "policy": {"name": "m", "sha256": "x"},
             "prompt": [{"role": "system", "content": "s"}], "chosen": "a", "rejected": "b", "q_chosen": q}
            for i, q in enumerate(qs)]


@pytest.mark.parametrize("n, alpha, expected", [
    (10, 0.5, 5), (9, 0.5, 5), (7, 0.3, 2), (3, 0.1, 1), (1, 0.5, 1), (4, 1.0, 4), (5, 0.7, 4),
])
def test_budget_rounds_half_up_and_keeps_at_least_one(n, alpha, expected):
    assert budget(n, alpha) == expected


def test_rank_is_best_first_and_ties_keep_pool_order():
    assert rank([0.2, 0.9, 0.2, 0.5]) == [3, 1, 4, 2]


@pytest.mark.parametrize("selector, alpha, expected", [
    ("qvalue", 0.5, ["t:q1/n0", "t:q3/n0"]),
    ("qvalue", 0.25, ["t:q1/n0"]),
    ("optima_full", 0.25, ["t:q1/n0", "t:q3/n0", "t:q0/n0", "t:q2/n0"]),  # everything, best Q first
])
def test_baselines(selector, alpha, expected):
    chosen, rows, _ = select(pool([0.5, 0.9, 0.45, 0.7]), SelectConfig(selector=selector, alpha=alpha))
    assert [p["pair_id"] for p in chosen] == expected
    assert sum(r["selected"] for r in rows) == len(expected)
    assert [r["Q"] for r in rows] == [0.5, 0.9, 0.45, 0.7]  # every candidate keeps a row, in pool order


def test_qvalue_ties_fall_back_to_pool_order():
    chosen, _, _ = select(pool([0.6, 0.8, 0.8, 0.8]), SelectConfig(selector="qvalue", alpha=0.5))
    assert [p["pair_id"] for p in chosen] == ["t:q1/n0", "t:q2/n0"]


def test_random_is_seeded_and_independent_of_pool_order():
    pairs = pool([0.5] * 40)
    a, _, _ = select(pairs, SelectConfig(selector="random", alpha=0.25, seed=1))
    b, _, _ = select(pairs[::-1], SelectConfig(selector="random", alpha=0.25, seed=1))
    c, _, _ = select(pairs, SelectConfig(selector="random", alpha=0.25, seed=2))
    ids = lambda chosen: sorted(p["pair_id"] for p in chosen)  # noqa: E731
    assert len(a) == 10 and ids(a) == ids(b) and ids(a) != ids(c)


@pytest.mark.parametrize("cfg, pairs, message", [
    (SelectConfig(selector="qvalue", alpha=0.0), pool([0.5]), "alpha must be in (0, 1]"),
    (SelectConfig(selector="qvalue", alpha=1.5), pool([0.5]), "alpha must be in (0, 1]"),
    (SelectConfig(selector="qvalue"), [], "the candidate pool is empty"),
    (SelectConfig(selector="qvalu"), pool([0.5]), "unknown selector 'qvalu'; did you mean: qvalue"),
])
def test_bad_selection_input(cfg, pairs, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(")):
        select(pairs, cfg)


def write(path, pairs):
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def test_select_command_writes_every_score(tmp_path, capsys):
    pairs = write(tmp_path / "pairs.jsonl", pool([0.5, 0.9, 0.45, 0.7]))
    out = tmp_path / "sel"
    assert main(["select", "--selector", "qvalue", "--pairs", str(pairs), "--alpha", "0.5", "--out", str(out)]) == 0
    assert "2 of 4 pairs selected by qvalue" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [(r["rank"], r["selected"]) for r in rows] == [(3, False), (1, True), (4, False), (2, True)]
    assert [json.loads(line)["pair_id"] for line in (out / "selected.jsonl").read_text().splitlines()] == [
        "t:q1/n0", "t:q3/n0"]
    spec = json.loads((out / "run_spec.json").read_text())
    assert spec["candidates"] == 4 and spec["schema_version"] == 1
    # what reports need of the selector, recorded with the selection
    assert spec["selector_traits"] == {"influence": False, "keeps_all": False, "kind": None}


@pytest.mark.parametrize("content, message", [
    ('{"pair_id": 1}\n', "pairs.jsonl:1: missing key 'question_id'"),
    ("not json\n", "pairs.jsonl:1: not valid JSON"),
    (json.dumps(pool([0.5])[0]) + "\n" + json.dumps(pool([0.5], task="cbt")[0]) + "\n",
     "pairs from more than one task"),
])
def test_bad_pairs_file_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "pairs.jsonl").write_text(content)
    out = tmp_path / "sel"
    assert main(["select", "--selector", "qvalue", "--pairs", str(tmp_path / "pairs.jsonl"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists()


def _estimate(f_after):
    """A DITS estimate of two pairs a unit, without a model: only its numbers matter here."""
    from harness.dits.influence import Estimate

    return Estimate(units=[[2 * u, 2 * u + 1] for u in range(len(f_after))], f_before=0.5, f_after=f_after,
                    changed_answers=[1] * len(f_after), validation_ids=["v0", "v1"], seconds={"units": 1.0}, eta=1e-3,
                    validation_dialogues=2 * (len(f_after) + 1))


@pytest.mark.parametrize("f_after, gamma, fallback", [
    ([0.5, 0.5, 0.5, 0.75, 0.75, 0.75], 1.0, "fell back to Q"),  # 6 units, 2 distinct values
    ([0.5, 0.5, 0.5, 0.75, 0.75, 0.75], 0.0, "fell back to pool order"),
    ([0.0, 0.25, 0.5, 0.75, 1.0, 0.6], 1.0, None),  # 6 distinct values
])
def test_degenerate_influence_is_warned_and_recorded(tmp_path, monkeypatch, caplog, f_after, gamma, fallback):
    monkeypatch.setattr("harness.dits.selector.estimate", lambda *args: _estimate(f_after))
    pairs = write(tmp_path / "pairs.jsonl", pool([0.1 * i for i in range(12)]))
    out, _, _ = run_select(SelectConfig(selector="dits", pairs=str(pairs), gamma=gamma, out=str(tmp_path / "sel")))
    spec = json.loads((out / "run_spec.json").read_text())
    facts = spec["selector_facts"]
    assert facts["resolution"]["degenerate"] == fallback
    assert spec["selector_traits"] == {"influence": True, "keeps_all": False, "kind": "metric"}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if fallback:
        assert warned == ["metric influence is degenerate: 2 distinct values over 6 units, "
                          f"so the selection {fallback}"]
    else:
        assert not warned
