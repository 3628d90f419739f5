"""Third-party tasks and selectors through entry points: a distribution laid out in tmp_path (a
`.dist-info` with its `entry_points.txt`, and its module beside it) registers without editing the
repository and without installing anything."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.registry import Registry
from harness.selection import SELECTORS
from harness.tasks import TASKS
from harness.tasks.base import FIXTURES

PLUGIN = '''
from harness.selection import Scores, Selector
from harness.tasks.arc_c import ARCChallenge


class ARCToy(ARCChallenge):
    """ARC-C's rows under another name, from a data directory."""
    name = "arc_toy"
    dataset = None


class Longest(Selector):
    """The pairs with the longest chosen response."""

    def score(self, pairs, cfg):
        return Scores(h=[float(len(p["chosen"])) for p in pairs], influence=[None] * len(pairs))
'''


def distribution(root: Path, entry_points: str, name: str = "harness-toy") -> Path:
    """A distribution on a path entry: `root/<name>-1.0.dist-info` and the module `toy_plugin.py`."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (root / "toy_plugin.py").write_text(PLUGIN)
    return root


ENTRY_POINTS = """[harness.tasks]
arc_toy = toy_plugin:ARCToy
arc_c = toy_plugin:ARCToy

[harness.selectors]
longest = toy_plugin:Longest
"""


def test_group_defaults_to_the_kind():
    assert (TASKS.group, SELECTORS.group) == ("harness.tasks", "harness.selectors")
    assert Registry("CBT word type").group == "harness.cbt_word_types"
    assert Registry("task", group="acme.tasks").group == "acme.tasks"


def test_task_and_selector_from_entry_points(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(distribution(tmp_path / "site", ENTRY_POINTS)))
    tasks, selectors = Registry("task"), Registry("selector")
    tasks.register("arc_c", "harness.tasks.arc_c:ARCChallenge")
    with caplog.at_level(logging.WARNING, logger="harness.registry"):
        assert tasks.names() == ["arc_c", "arc_toy"]
    assert "'arc_c' of harness-toy (entry point toy_plugin:ARCToy) is ignored" in caplog.text
    assert tasks.get("arc_c").__name__ == "ARCChallenge"  # the harness's own wins the clash

    data = tmp_path / "data" / "arc_toy"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text((FIXTURES / "arc_c" / "test.jsonl").read_text())
    questions = tasks.get("arc_toy")().load("test", data_dir=tmp_path / "data", limit=2)
    assert len(questions) == 2 and questions[0].options

    assert "longest" in selectors  # a missing name reads the group
    scores = selectors.get("longest")().score([{"chosen": "ab"}, {"chosen": "abc"}], None)
    assert scores.h == [2.0, 3.0]


def test_the_command_line_runs_a_plugin_task_and_selector(tmp_path):
    """`harness ls`, `harness eval --task` and `harness select --selector` from a path entry."""
    site = distribution(tmp_path / "site", ENTRY_POINTS)
    data = tmp_path / "data" / "arc_toy"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text((FIXTURES / "arc_c" / "test.jsonl").read_text())
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"pair_id": f"p{i}", "question_id": f"q{i}", "task": "arc_c",
                                         "policy": {"name": "stand-in"}, "prompt": [], "chosen": chosen,
                                         "rejected": "no", "q_chosen": 0.0}) + "\n"
                             for i, chosen in enumerate(["ab", "abcd", "abc"])))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    def harness(*args):
        out = subprocess.run([sys.executable, "-m", "harness", *args], env=env, cwd=tmp_path, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    listed = harness("ls", "tasks")
    assert {"arc_toy", "arc_c", "cbt"} <= {line.split("|")[1].strip() for line in listed.stdout.splitlines()[2:]}
    assert "is ignored: the harness has its own" in listed.stderr
    harness("eval", "--task", "arc_toy", "--model", "tiny-random", "--limit", "2", "--data-dir", str(tmp_path / "data"),
            "--out", str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "stats.json").read_text())["n"] == 2
    harness("select", "--selector", "longest", "--pairs", str(pairs), "--alpha", "0.34", "--out", str(tmp_path / "sel"))
    assert [json.loads(line)["pair_id"] for line in (tmp_path / "sel" / "selected.jsonl").open()] == ["p1"]


@pytest.mark.parametrize("value, said", [
    ("toy_plugin", "names a module, not an object: write it as 'module:attr'"),
    ("no_such_module:Thing", "could not be loaded: No module named 'no_such_module'"),
    ("toy_plugin:NoSuchClass", "could not be loaded"),
])
def test_a_broken_entry_point_is_one_line(tmp_path, monkeypatch, value, said):
    monkeypatch.syspath_prepend(str(distribution(tmp_path / "site", f"[harness.tasks]\nbroken = {value}\n")))
    with pytest.raises(HarnessError, match="task 'broken' of harness-toy") as e:
        Registry("task").get("broken")
    assert said in str(e.value) and "\n" not in str(e.value)


def test_unknown_name_still_names_the_nearest(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(distribution(tmp_path / "site", ENTRY_POINTS)))
    with pytest.raises(HarnessError, match="unknown task 'arc_tyo'; did you mean: arc_toy"):
        Registry("task").get("arc_tyo")

