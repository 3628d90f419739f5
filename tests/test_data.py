"""`harness data ls` and `harness data fetch`, through a local stand-in for the hub."""

import json

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.tasks import get_task
from harness.tasks.base import FIXTURES


# -- fetch through a local stand-in for the hub -------------------------------------------------
def fixture_rows(task, split):
    return [json.loads(line) for line in (FIXTURES / task / f"{split}.jsonl").read_text().splitlines()]


def test_fetch_round_trips_a_parquet_stand_in_for_the_hub(tmp_path, capsys):
    import datasets

    files = []
    for split in ("train", "validation", "test"):  # the hub's split names for cbt
        path = tmp_path / "hub" / f"{split}.parquet"
        path.parent.mkdir(exist_ok=True)
        datasets.Dataset.from_list(fixture_rows("cbt", split)).to_parquet(str(path))
        files.append(f"{split}={path}")
    data = tmp_path / "data"
    assert main(["data", "fetch", "--task", "cbt", "--data-dir", str(data), "--files", *files]) == 0
    assert "written to" in capsys.readouterr().out
    for split in ("train", "validation", "test"):
        assert [json.loads(line) for line in (data / "cbt" / f"{split}.jsonl").read_text().splitlines()] \
            == fixture_rows("cbt", split)
        assert get_task("cbt").load(split, data) == get_task("cbt").load(split, FIXTURES)
    assert not list(data.rglob(".*partial*"))


def test_fetch_reads_hub_slices_and_limits(tmp_path):
    from harness.data.fetch import fetch

    rows = fixture_rows("triviaqa", "test")
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = {"path": "json", "data_files": {"validation": str(path)}, "cache_dir": str(tmp_path / "cache")}
    written = fetch("triviaqa", tmp_path / "data", ["test"], limit=5, source=source)  # test = validation[:1000]
    out, n = written["test"]
    assert n == 5 and [json.loads(line) for line in out.read_text().splitlines()] == rows[:5]


def test_fetch_checks_every_split_before_writing(tmp_path):
    from harness.data.fetch import fetch

    good, bad = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in fixture_rows("cbt", "train")))
    bad.write_text(json.dumps({"sentences": [], "question": "q", "answer": "z", "options": ["a"]}) + "\n")
    source = {"path": "json", "data_files": {"train": str(good), "test": str(bad)},
              "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(HarnessError, match=r"json:test:1: answer 'z' is not among the options"):
        fetch("cbt", tmp_path / "data", ["train", "test"], source=source)
    assert not (tmp_path / "data").exists()
    with pytest.raises(HarnessError, match="2wmh is not on the hub"):
        fetch("2wmh", tmp_path / "data")


# -- inventory --------------------------------------------------------------------------------
def test_data_ls_counts_rows_and_reports_schema_problems(tmp_path, capsys):
    (tmp_path / "cbt").mkdir()
    (tmp_path / "cbt" / "test.jsonl").write_text((FIXTURES / "cbt" / "test.jsonl").read_text())
    assert main(["data", "ls", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"| cbt       | test       | 24     | {tmp_path / 'cbt' / 'test.jsonl'}" in out
    assert "hub cam-cst/cbt (CN) train" in out and "not here (and not on the hub)" in out
    (tmp_path / "cbt" / "train.jsonl").write_text('{"question": "q"}\n')
    assert main(["data", "ls", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "1: missing key 'sentences'" in captured.out
    assert captured.err.startswith("error: schema problems in 1 file(s)") and "\n" not in captured.err.strip()


# -- where a task's rows come from --------------------------------------------------------------
def test_a_missing_data_directory_is_named_as_such(tmp_path):
    with pytest.raises(HarnessError) as e:
        get_task("cbt").load("test", data_dir=tmp_path / "nope")
    assert str(e.value) == f"{tmp_path / 'nope'}: data directory not found"


def test_a_missing_task_folder_names_the_folders_there(tmp_path):
    for name in ("hotpotqa", "arc_c", ".cache"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(HarnessError) as e:
        get_task("cbt").load("test", data_dir=tmp_path)
    assert str(e.value) == f"{tmp_path / 'cbt'}: no cbt folder in this data directory (it has: arc_c, hotpotqa)"


def test_the_sample_warning_is_given_once_a_task(monkeypatch, caplog):
    # Every stage of a run loads its questions: the warning would repeat at each.
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.setattr("harness.tasks.base._WARNED_SAMPLES", set())
    for task, split in [("cbt", "train"), ("cbt", "test"), ("arc_c", "test"), ("cbt", "train")]:
        get_task(task).load(split)
    warned = [r.getMessage() for r in caplog.records if "project-written sample" in r.getMessage()]
    assert len(warned) == 2 and str(FIXTURES / "cbt") in warned[0] and str(FIXTURES / "arc_c") in warned[1]
