"""The wheel is the harness whole: built from a copy of the tree, it holds the presets, the task
fixtures and no generic top-level packages, and installed alone into a folder it runs the smoke
experiment from anywhere (about 20 s: the tiny model comes from the shared model cache)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # A copy, so the build's build/ and egg-info folders never land in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(out), str(src)], check=True, capture_output=True, text=True)
    (built,) = out.glob("*.whl")
    return built


def test_wheel_holds_the_package_data_and_only_harness(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"harness"}
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "harness").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert {"harness/presets/smoke.yaml", "harness/tasks/fixtures/cbt/test.jsonl"} <= data
    assert sorted(data - set(names)) == []  # every preset, fixture, book, schema and lm-eval config


def test_installed_wheel_runs_the_smoke_experiment(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, text=True)
    # The test session's environment (conftest.py: offline, the CBT sample) and its model cache.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}

    where = subprocess.run([sys.executable, "-c", "import harness; print(harness.__file__)"], env=env, cwd=work,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target)

    run = subprocess.run([sys.executable, "-m", "harness", "run", "--preset", "smoke"], env=env, cwd=work,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    (record,) = (work / "runs" / "default").glob("run:*")
    assert (record / "results.json").is_file()
