"""`harness eval` end to end on the tiny models, through the CLI as a user runs it."""

import json

import pytest

from harness.cli import main

TASKS = ["hotpotqa", "2wmh", "triviaqa", "cbt", "arc_c", "mmlu"]
RECORD = ["run_spec.json", "per_instance.jsonl", "stats.json", "cost.json"]


@pytest.mark.parametrize("task", TASKS)
def test_eval_tiny_random_on_real_samples(task, shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["eval", "--model", "tiny-random", "--task", task, "--limit", "4", "--data-dir", str(shared_data),
               "--out", str(out), "max_new_tokens=16", "max_turns=4"])
    assert rc == 0
    # CBT's choice-mode evaluation adds its reference rows
    assert sorted(p.name for p in out.iterdir()) == sorted(RECORD + ["references.json"] * (task == "cbt"))
    rows = [json.loads(line) for line in (out / "per_instance.jsonl").read_text().splitlines()]
    stats = json.loads((out / "stats.json").read_text())
    spec = json.loads((out / "run_spec.json").read_text())
    available = sum(1 for _ in open(shared_data / task / "test.jsonl"))
    assert stats["n"] == len(rows) == min(4, available)
    assert stats["mean"] == pytest.approx(sum(r["score"] for r in rows) / len(rows))
    assert all(1 <= r["turns"] <= 4 and len(r["transcript"]) == r["turns"] or
               # the closing answer turn, after a capped dialogue without an answer
               r["turns"] == 5 and r["transcript"][-1].get("closing") and not any(t["answer"] for t in r["transcript"][:4])
               for r in rows)
    assert all(r["tokens"] == sum(r["tokens_per_agent"].values()) for r in rows)
    assert spec["config"]["task"] == task and spec["model"]["sha256"] and spec["versions"]["torch"]
    assert str(shared_data) in spec["data"]["source"]
    assert task in capsys.readouterr().out  # the results table


def test_tiny_fitted_dialogues_carry_parsed_answers(shared_data, tmp_path):
    from harness import evaluate

    result = evaluate(task="hotpotqa", model="tiny-fitted", limit=6, data_dir=str(shared_data),
                      out=str(tmp_path / "r"), max_new_tokens=32)
    answers = [u["answer"] for r in result.per_instance for u in r["transcript"]]
    assert sum(bool(a) for a in answers) >= len(result.per_instance)
    assert result.stats["answered_rate"] > 0.5
    assert result.cost["completion_tokens"] == sum(r["tokens"] for r in result.per_instance)
    again = evaluate(task="hotpotqa", model="tiny-fitted", limit=6, data_dir=str(shared_data),
                     out=str(tmp_path / "r2"), max_new_tokens=32)
    assert again.per_instance == result.per_instance  # greedy and seeded: reproducible


@pytest.mark.parametrize("args, message", [
    (["--task", "cbtt"], "unknown task 'cbtt'; did you mean: cbt"),
    (["--task", "cbt", "--model", "tiny-rand"], "unknown model 'tiny-rand'; did you mean: tiny-random"),
    (["--task", "cbt", "limt=2"], "unknown config key 'limt'"),
    (["--task", "webwalker", "web.page_chars=0"], "web.page_chars=0 must be a positive number"),
])
def test_bad_input_exits_2_with_one_line_and_no_record(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_malformed_data_row_exits_2_naming_file_and_line(tmp_path, capsys):
    data = tmp_path / "data" / "arc_c"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text('{"id": "x", "question": "q"}\n')
    out = tmp_path / "run"
    assert main(["eval", "--task", "arc_c", "--model", "tiny-random", "--data-dir", str(tmp_path / "data"),
                 "--out", str(out)]) == 2
    assert f"{data / 'test.jsonl'}:1: missing key 'choices.text'" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_ls_and_validate(capsys):
    assert main(["ls", "tasks"]) == 0 and "webwalker" in capsys.readouterr().out
    assert main(["ls", "models"]) == 0 and "smollm2-135m" in capsys.readouterr().out
    assert main(["ls", "presets"]) == 0 and "smoke" in capsys.readouterr().out
    assert main(["ls", "backends"]) == 0
    listed = capsys.readouterr().out
    assert all(f"| {n} " in listed for n in ("hf", "openai", "llama.cpp"))
    assert main(["validate", "--config", "smoke", "task=arc_c"]) == 0
    assert "config is valid" in capsys.readouterr().out
    assert main(["validate", "metric=f2"]) == 2
    assert "unknown metric 'f2'; did you mean: f1" in capsys.readouterr().err
