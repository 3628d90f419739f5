"""Records that describe themselves and survive crashes: durable writes, manifests, locks that die
with their holder, the status read from them, the run_spec and cost schemas, the executor's resume
on stages whose files were cut, older records refused, `harness validate --run`, and reports that
import no torch. Pure logic and hand-made stages: no model runs here."""

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import runs
from harness.cli import main
from harness.errors import HarnessError
from harness.records import cost, lock, manifest, spec, status

ROOT = Path(__file__).resolve().parents[1]


# -- durable writes ----------------------------------------------------------------------------

@pytest.mark.parametrize("write, data, text", [
    (runs.write_json, {"a": 1}, '{\n  "a": 1\n}\n'),
    (runs.write_jsonl, [{"a": 1}, {"b": 2}], '{"a": 1}\n{"b": 2}\n'),
    (runs.write_text, "x\n", "x\n"),
])
def test_writes_replace_the_file_whole_and_leave_no_temporary(tmp_path, write, data, text):
    path = tmp_path / "deep" / "f"
    write(path, data)
    write(path, data)  # over an existing file
    assert path.read_text() == text and os.listdir(path.parent) == ["f"]
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # the default mode, not a private temporary's 0600


def test_a_failed_write_keeps_the_old_file_and_a_failed_directory_the_old_directory(tmp_path):
    path = tmp_path / "f.json"
    runs.write_json(path, {"old": True})
    with pytest.raises(RuntimeError), runs.atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert json.loads(path.read_text()) == {"old": True} and os.listdir(tmp_path) == ["f.json"]
    final = tmp_path / "stage"
    with runs.run_directory(final) as tmp:
        runs.write_json(tmp / "a.json", 1)
    with pytest.raises(RuntimeError), runs.run_directory(final) as tmp:
        runs.write_json(tmp / "a.json", 2)
        raise RuntimeError
    assert json.loads((final / "a.json").read_text()) == 1 and sorted(os.listdir(tmp_path)) == ["f.json", "stage"]


# -- manifests ---------------------------------------------------------------------------------

def _cut(d):
    (d / "model" / "w.bin").write_bytes(b"0123")


def _changed(d):
    (d / "model" / "w.bin").write_bytes(b"012345678X")


def _removed(d):
    (d / "stats.json").unlink()


def _no_manifest(d):
    (d / manifest.FILE).unlink()


def _garbled_manifest(d):
    (d / manifest.FILE).write_text("{")


def _manifest_without_files(d):
    (d / manifest.FILE).write_text('{"schema_version": 1}')


@pytest.mark.parametrize("damage, hashes, problem", [
    (None, True, None),
    (_cut, True, "model/w.bin has 4 bytes, its manifest says 10"),
    (_changed, True, "model/w.bin changed since it was written (sha256)"),
    (_changed, False, None),  # sizes only: a same-size change passes
    (_removed, True, "stats.json is missing"),
    (_no_manifest, True, "no manifest.json: it stopped before it finished"),
    (_garbled_manifest, True, "manifest.json is not valid JSON"),
    (_manifest_without_files, True, "manifest.json: (top): 'files' is a required property"),
])
def test_a_stage_is_finished_only_while_its_files_match_its_manifest(tmp_path, damage, hashes, problem):
    d = tmp_path / "stage"
    (d / "model").mkdir(parents=True)
    (d / "model" / "w.bin").write_bytes(b"0123456789")
    runs.write_json(d / "stats.json", {"steps": 3})
    written = manifest.write(d)
    assert sorted(written["files"]) == ["model/w.bin", "stats.json"]
    if damage:
        damage(d)
    found = manifest.problem(d, hashes)
    assert found == problem if problem is None else found.startswith(problem)


def test_a_directory_never_written_is_not_finished(tmp_path):
    assert manifest.problem(tmp_path / "absent") == "not written"


# -- locks and status --------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.records import lock, status
    d = Path(sys.argv[1])
    with lock.hold(d):
        status.write(d, "running", "it0/sft")
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_killed_holders_lock_is_free_and_its_run_reads_as_interrupted(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock.held(run) and status.read(run)["state"] == "running"
        with pytest.raises(HarnessError, match=rf"{run}: process {holder.pid} is working in it"):
            with lock.hold(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert not lock.held(run)
    assert json.loads((run / status.FILE).read_text())["state"] == "running"  # what it last recorded
    assert status.read(run) | {"time": 0} == {"state": "interrupted", "recorded": "running", "stage": "it0/sft",
                                              "time": 0}
    with lock.hold(run):  # free for the next process
        assert status.read(run)["state"] == "running"


def test_a_shared_stage_lock_is_waited_for(tmp_path):
    said, got = [], threading.Event()

    def wait():
        with lock.hold(tmp_path, wait=True, progress=said.append):
            got.set()

    with lock.hold(tmp_path):
        waiter = threading.Thread(target=wait)
        waiter.start()
        deadline = time.time() + 5
        while not said and time.time() < deadline:
            time.sleep(0.01)
        assert said == [f"waiting for process {os.getpid()}, which is working in {tmp_path}"] and not got.is_set()
    assert got.wait(5)
    waiter.join(5)


@pytest.mark.parametrize("recorded, locking, locked, state", [
    (None, True, False, "not started"),
    ("running", True, True, "running"),
    ("running", True, False, "interrupted"),
    ("failed", True, False, "failed"),
    ("complete", True, False, "complete"),
    # an older harness took no lock: while its run says running, nothing says otherwise
    ("running", False, False, "running"),
])
def test_running_is_believed_only_while_the_lock_is_held(tmp_path, recorded, locking, locked, state):
    if locking:
        with lock.hold(tmp_path):  # a process worked here, and ended
            pass
    if recorded:
        status.write(tmp_path, recorded, "it0/dpo")
    if locked:
        with lock.hold(tmp_path):
            assert status.read(tmp_path)["state"] == state
    else:
        assert status.read(tmp_path)["state"] == state


# -- run_spec and cost schemas -----------------------------------------------------------------

FACTS = {
    "run": {"shared_stages": "/s/shared/k", "shared_key": "k", "pools": {"test": ["q1"]},
            "stages": [{"stage": "eval", "path": "/s/shared/k/eval_initial", "shared": True}]},
    "select": {"task": "t", "policy": {"name": "m"}, "candidates": 4, "selected": 2, "selector_facts": {},
               "selector_traits": {"influence": False, "keeps_all": False, "kind": None}},
    "eval": {"dialogue": {}, "setting": "s", "answer_mode": "choice", "model": {"name": "m"}, "data": {}},
    "synth": {"policy": {}, "reward_model": {}, "reward": {}, "pair_rule": {}, "metric": "f1", "setting": "s",
              "data": {}},
}


@pytest.fixture
def no_torch_device(monkeypatch):
    from harness import machine

    monkeypatch.setattr(machine, "device_info", lambda device: {"device": device})


@pytest.mark.parametrize("kind", FACTS)
def test_every_kind_of_run_spec_comes_from_one_builder(kind):
    device = None if kind == "select" else {"device": "cpu"}
    built = spec.run_spec(kind, f"{kind}:x", {"section": {"k": (1, 2)}}, 0, device=device, **FACTS[kind])
    assert built["schema_version"] == spec.SCHEMA_VERSION and built["kind"] == kind
    assert built["config"] == {"section": {"k": [1, 2]}}  # as it reads back
    assert {"versions", "git_sha", "command"} <= built.keys()
    missing = next(iter(FACTS[kind]))
    with pytest.raises(HarnessError, match=rf"{kind} run_spec.json: \(top\): '{missing}' is a required property"):
        spec.run_spec(kind, f"{kind}:x", {}, 0, device=device, **{k: v for k, v in FACTS[kind].items() if k != missing})


@pytest.mark.parametrize("name, files, work", [
    ("sft", {"stats.json": {"steps": 3, "train_loss": 0.5, "base": "m", "merged": True}},
     {"steps": 3, "train_loss": 0.5}),
    ("eval", {"cost.json": {"requests": 8, "completion_tokens": 90, "wall_seconds": 2.0}},
     {"requests": 8, "completion_tokens": 90, "wall_seconds": 2.0}),
    ("mcts", {"cost.json": {"search": {"rollouts": 12, "completion_tokens": 400}, "rollouts": 12}},
     {"rollouts": 12, "completion_tokens": 400}),
    ("probe", {"probe.json": {"t_norm": 9, "cost": {"requests": 4}}}, {"requests": 4}),
    ("select", {"run_spec.json": {"candidates": 4, "selected": 2, "selector_facts": {}, "config": {}}},
     {"candidates": 4, "selected": 2, "influence_units": 0}),
    # a record of the flat layout (a80c8ba and before): warmup_steps at the top of the select config
    ("select", {"run_spec.json": {"candidates": 4, "selected": 2, "config": {"warmup_steps": 1}, "selector_facts": {
        "units": [[0, 1], [2, 3]], "validation_dialogues": 6, "seconds": {"units": 2.0, "warmup": 1.0},
        "reused_estimate": False, "usage": {"completion_tokens": 50, "requests": 3}}}},
     {"candidates": 4, "selected": 2, "influence_units": 2, "warmup_steps": 1, "validation_dialogues": 6,
      "influence_seconds": 3.0, "reused_estimate": False, "completion_tokens": 50}),
])
def test_each_stage_cost_is_one_record_of_one_schema(tmp_path, name, files, work):
    for file, content in files.items():
        runs.write_json(tmp_path / file, content)
    record = cost.record(f"it0/{name}", name, tmp_path, "cpu", 1.5)
    assert record == {"schema_version": 1, "stage": f"it0/{name}", "name": name, "device": "cpu",
                      "wall_seconds": 1.5, "work": work}
    runs.write_json(tmp_path / cost.FILE, record)
    assert cost.read(tmp_path) == record
    runs.write_json(tmp_path / cost.FILE, record | {"wall_seconds": -1})
    with pytest.raises(HarnessError, match="stage_cost.json: wall_seconds: -1 is less than the minimum of 0"):
        cost.read(tmp_path)


# -- the executor on hand-made stages ----------------------------------------------------------

class _Stage:
    """A stage that writes what its kind records, and counts its runs."""

    STATS = {"sft_data": {"examples": 2, "kept_questions": 1, "questions": 2, "cost": {"completion_tokens": 7}},
             "sft": {"examples": 2, "steps": 3, "train_loss": 0.25}}

    def __init__(self, name, root, shared):
        self.name, self.iteration, self.shared, self.does = name, 0, shared, f"make {name}"
        self.path, self.home = root / "it0" / name, None
        self.runs = 0

    @property
    def label(self):
        return f"it0/{self.name}"

    def run(self, out):
        self.runs += 1
        with runs.run_directory(out) as tmp:
            runs.write_json(tmp / "stats.json", self.STATS[self.name])
            (tmp / "weights.bin").write_bytes(b"w" * 100)


@pytest.fixture
def plan(tmp_path, monkeypatch, no_torch_device):
    from harness.experiment import executor

    monkeypatch.setattr(executor, "check_pools", lambda plan: {"test": ["q1"]})
    monkeypatch.setattr(executor, "collect", lambda plan: {"run_id": plan.run_id})
    suite = tmp_path / "suite"
    shared = suite / "shared" / "k"
    return SimpleNamespace(run=SimpleNamespace(seed=0, device="cpu"), run_id="run:x", run_dir=suite / "run:x",
                           shared_dir=shared, key="k", configs=dict, initial_dir=suite / "initial" / "k",
                           stages=[_Stage("sft_data", shared, True), _Stage("sft", suite / "run:x", False)])


def _execute(plan, resume=False):
    from harness.experiment.executor import execute

    said = []
    execute(plan, resume=resume, progress=said.append)
    return said


def test_a_stage_whose_file_was_cut_after_it_finished_is_redone_on_resume(plan, capsys):
    _execute(plan)
    data, sft = plan.stages
    assert [s.runs for s in plan.stages] == [1, 1] and status.read(plan.run_dir)["state"] == "complete"
    assert cost.read(sft.path)["work"] == {"examples": 2, "steps": 3, "train_loss": 0.25}
    assert set(json.loads((sft.path / manifest.FILE).read_text())["files"]) == {"stats.json", "weights.bin",
                                                                                cost.FILE}
    assert main(["validate", "--run", str(plan.run_dir)]) == 0
    assert "records consistent (complete)" in capsys.readouterr().out
    with pytest.raises(HarnessError, match="exists; --resume continues it"):
        _execute(plan)
    (sft.path / "weights.bin").write_bytes(b"w" * 10)  # a crash cut it after the stage finished
    assert main(["validate", "--run", str(plan.run_dir)]) == 2
    assert f"it0/sft ({sft.path}): weights.bin has 10 bytes, its manifest says 100" in capsys.readouterr().out
    said = _execute(plan, resume=True)
    assert [s.runs for s in plan.stages] == [1, 2]
    assert f"[it0/sft] redo: weights.bin has 10 bytes, its manifest says 100 ({sft.path})" in said
    assert f"[it0/sft_data] done: {data.path}" in said
    assert manifest.problem(sft.path) is None
    # a crash between a stage's last file and its manifest: not finished, so redone
    (sft.path / manifest.FILE).unlink()
    _execute(plan, resume=True)
    assert [s.runs for s in plan.stages] == [1, 3]


def test_a_second_process_on_the_same_run_is_refused(plan):
    with lock.hold(plan.run_dir):
        with pytest.raises(HarnessError, match=rf"process {os.getpid()} is working in it"):
            _execute(plan)
    assert [s.runs for s in plan.stages] == [0, 0]


def test_a_failed_stage_is_recorded_and_validate_says_what_is_unfinished(plan, capsys):
    def broken(out):
        raise RuntimeError("boom")

    plan.stages[1].run = broken
    with pytest.raises(RuntimeError):
        _execute(plan)
    assert status.read(plan.run_dir) | {"time": 0} == {"state": "failed", "stage": "it0/sft", "time": 0}
    assert main(["validate", "--run", str(plan.run_dir)]) == 0
    assert "records consistent (failed at stage it0/sft)" in capsys.readouterr().out


def _strip(run_dir, shared_dir):
    """Make a new record read as one commit a80c8ba wrote: no schema_version, no manifests, no cost
    records, ledger lines without schema_version."""
    record = json.loads((run_dir / spec.FILE).read_text())
    del record["schema_version"]
    runs.write_json(run_dir / spec.FILE, record)
    for folder in (run_dir, shared_dir):
        for name in (manifest.FILE, cost.FILE):
            for path in folder.rglob(name):
                path.unlink()
        ledger = folder / "ledger.jsonl"
        runs.write_jsonl(ledger, [{k: v for k, v in row.items() if k != "schema_version"}
                                  for _, row in runs.read_jsonl(ledger)])


def test_older_records_are_read_never_resumed(plan, tmp_path, capsys):
    _execute(plan)
    _strip(plan.run_dir, plan.shared_dir)
    with pytest.raises(HarnessError, match=r"written by an older harness \(no schema_version in run_spec.json\)"):
        _execute(plan, resume=True)
    assert main(["validate", "--run", str(plan.run_dir)]) == 2
    assert "no schema_version: written by an older harness" in capsys.readouterr().out
    # a new run beside them does not take over their shared stages either
    (plan.run_dir / spec.FILE).unlink()
    with pytest.raises(HarnessError, match=r"it0/sft_data: finished by an older harness \(no manifest.json\)"):
        _execute(plan, resume=True)
    assert [s.runs for s in plan.stages] == [1, 1]


# -- reports read files only -------------------------------------------------------------------

NO_TORCH = textwrap.dedent("""
    import importlib, importlib.abc, pkgutil, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        # made unimportable with a finder: sys.modules["torch"] = None would also break scipy,
        # which looks torch up in sys.modules to recognise its arrays
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r} (made unimportable)")

    sys.meta_path.insert(0, NoTorch())
    import harness.report
    for module in pkgutil.iter_modules(harness.report.__path__):
        importlib.import_module(f"harness.report.{module.name}")
    print(" ".join(sorted(n for n in sys.modules if n.partition(".")[0] in ("harness", "transformers", "trl", "peft"))))
""")


def test_every_report_module_imports_without_torch():
    out = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.split()
    assert "harness.report.leaderboard" in loaded
    assert not [m for m in loaded if m.startswith(("harness.experiment", "harness.train", "harness.dits",
                                                   "harness.backends", "harness.selection", "transformers"))]


def test_the_older_records_selector_traits_are_the_selectors_own():
    from harness.report.legacy import SELECTOR_TRAITS
    from harness.selection import SELECTORS

    assert set(SELECTOR_TRAITS) <= set(SELECTORS)
    assert SELECTOR_TRAITS == {name: SELECTORS.get(name).traits() for name in SELECTOR_TRAITS}
