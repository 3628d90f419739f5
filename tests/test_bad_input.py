"""Bad input, one table (issue 26): every case answers one line naming the file, row or key, exits 2
and leaves the directory tree as it was (no half-written output). The commands are ones that check
their input before loading a model, so the table runs in seconds; a few cases run as subprocesses
for the real exit status, among them a full disk (`RLIMIT_FSIZE`)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from harness.cli import main
from harness.tasks.base import FIXTURES

ROOT = Path(__file__).resolve().parents[1]


# -- building bad input in a tmp dir ------------------------------------------------------------
def rows_of(task: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / task / f"{split}.jsonl").read_text().splitlines()]


def data(task: str = "cbt", split: str = "test", text: str | bytes | None = None,
         change: Callable[[list[dict]], None] | None = None) -> Callable[[Path], None]:
    """A setup: `t/data/<task>/` holds the fixture splits, `split` replaced by `text` (bytes as they are)
    or by its rows after `change`."""
    def setup(t: Path) -> None:
        folder = t / "data" / task
        folder.mkdir(parents=True)
        for name in ("train", "validation", "test"):
            shutil.copy(FIXTURES / task / f"{name}.jsonl", folder / f"{name}.jsonl")
        path = folder / f"{split}.jsonl"
        if change is not None:
            rows = rows_of(task, split)
            change(rows)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif text is not None:
            path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def fixture_text(task: str, split: str) -> str:
    return (FIXTURES / task / f"{split}.jsonl").read_text()


def file(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        (t / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def pair(i: int, **extra) -> dict:
    return {"pair_id": f"p{i}", "question_id": f"q{i}", "task": "cbt", "policy": "tiny-fitted", "prompt": [],
            "chosen": "c", "rejected": "r", "q_chosen": i / 10, **extra}


def pairs_text(n: int = 4, **extra) -> str:
    return "".join(json.dumps(pair(i, **extra)) + "\n" for i in range(n))


def resume_record(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A setup: the run directory of `RESUME` as a killed run left it (its spec, status and lock
    file), its run_spec.json then passed through `change` (a dict: written as JSON; bytes: as they are)."""
    def setup(t: Path) -> None:
        from harness.experiment.plan import make_plan
        from harness.records import spec

        plan = make_plan("smoke", [], selector="random", task="cbt", out=str(t / "suite"), data_dir=str(FIXTURES))
        plan.run_dir.mkdir(parents=True)
        (plan.run_dir / ".lock").write_text("1\n")
        (plan.run_dir / "status.json").write_text(json.dumps({"state": "running", "stage": "sft_data", "time": 0}))
        record = {"schema_version": spec.SCHEMA_VERSION, "run_id": plan.run_id, "kind": "run",
                  "config": plan.configs(), "seed": 0, "versions": {}, "git_sha": None, "command": ["harness"],
                  "shared_stages": str(plan.shared_dir), "shared_key": plan.key, "pools": {},
                  "device": {"device": "cpu"},
                  "stages": [{"stage": s.label, "path": str(s.path), "shared": s.shared} for s in plan.stages]}
        changed = change(json.loads(json.dumps(record, default=str)))
        content = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
        (plan.run_dir / spec.FILE).write_bytes(content)
    return setup


def without(key: str) -> Callable[[dict], dict]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def nothing(t: Path) -> None:
    pass


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        for s in setups:
            s(t)
    return setup


# -- the table ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    category: str
    setup: Callable[[Path], None]
    argv: list[str]  # "{t}" stands for the tmp dir
    expect: str  # in the one error line; "{t}" as above


D = "{t}/data"
DATA_LS = ["data", "ls", "--data-dir", D]
EVAL_CBT = ["eval", "--task", "cbt", "--data-dir", D, "--out", "{t}/out"]
DRY_RUN = ["run", "--config", "smoke", "--selector", "random", "--dry-run", "--out", "{t}/suite"]
SELECT = ["select", "--selector", "qvalue", "--pairs", "{t}/pairs.jsonl", "--out", "{t}/out"]
RESUME = ["run", "--config", "smoke", "--task", "cbt", "--selector", "random", "--data-dir", str(FIXTURES),
          "--out", "{t}/suite", "--resume"]
BIG = "word " * 50_000  # 250,000 characters

CASES = [
    # malformed JSONL
    Case("not-json", "malformed JSONL", data(text=fixture_text("cbt", "test") + "{\"sentences\": [\n"), DATA_LS,
         "{t}/data/cbt/test.jsonl:25: not valid JSON"),
    Case("json-array-row", "malformed JSONL", data(text="[1, 2]\n"), EVAL_CBT,
         "{t}/data/cbt/test.jsonl:1: expected a JSON object, got list"),
    Case("cut-last-line", "malformed JSONL", data(split="train", text=fixture_text("cbt", "train")[:-40]),
         [*DRY_RUN, "--task", "cbt", "--data-dir", D], "{t}/data/cbt/train.jsonl:24: not valid JSON"),
    Case("pairs-not-json", "malformed JSONL", file("pairs.jsonl", pairs_text() + "{oops}\n"), SELECT,
         "{t}/pairs.jsonl:5: not valid JSON"),
    Case("train-data-not-json", "malformed JSONL", file("sft.jsonl", "messages: []\n"),
         ["train", "--stage", "sft", "--data", "{t}/sft.jsonl", "--out", "{t}/out"], "{t}/sft.jsonl:1: not valid JSON"),
    # missing or mistyped fields
    Case("cbt-no-options", "missing or mistyped fields", data(change=lambda r: r[2].pop("options")), DATA_LS,
         "{t}/data/cbt/test.jsonl:3: missing key 'options'"),
    Case("arc-no-labels", "missing or mistyped fields",
         data("arc_c", change=lambda r: r[0]["choices"].pop("label")),
         ["eval", "--task", "arc_c", "--data-dir", D, "--out", "{t}/out"],
         "{t}/data/arc_c/test.jsonl:1: missing key 'choices.label'"),
    Case("hotpot-no-sentences", "missing or mistyped fields",
         data("hotpotqa", "train", change=lambda r: r[5]["context"].pop("sentences")),
         [*DRY_RUN, "--task", "hotpotqa", "--data-dir", D],
         "{t}/data/hotpotqa/train.jsonl:6: missing key 'context.sentences'"),
    Case("pairs-no-q", "missing or mistyped fields", file("pairs.jsonl", pairs_text() + json.dumps(
        {k: v for k, v in pair(9).items() if k != "q_chosen"}) + "\n"), SELECT,
         "{t}/pairs.jsonl:5: missing key 'q_chosen'"),
    Case("cbt-sentences-int", "missing or mistyped fields", data(change=lambda r: r[0].update(sentences=5)), EVAL_CBT,
         "{t}/data/cbt/test.jsonl:1: sentences must be a list of strings, got int"),
    Case("cbt-options-str", "missing or mistyped fields",
         data(change=lambda r: r[3].update(options="abc", answer="a")), DATA_LS,
         "{t}/data/cbt/test.jsonl:4: options must be a list of strings, got str"),
    Case("mmlu-choices-int", "missing or mistyped fields", data("mmlu", change=lambda r: r[1].update(choices=4)),
         ["eval", "--task", "mmlu", "--data-dir", D, "--out", "{t}/out"],
         "{t}/data/mmlu/test.jsonl:2: a field has the wrong type (TypeError"),
    # empty splits
    Case("empty-test", "empty splits", data(text=""), EVAL_CBT,
         "{t}/data/cbt/test.jsonl: no rows (an empty test split)"),
    Case("blank-train", "empty splits", data(split="train", text="\n\n"), [*DRY_RUN, "--task", "cbt", "--data-dir", D],
         "{t}/data/cbt/train.jsonl: no rows (an empty train split)"),
    Case("empty-validation-ls", "empty splits", data(split="validation", text=""), DATA_LS,
         "{t}/data/cbt/validation.jsonl: no rows"),
    # non-UTF-8 bytes
    Case("latin1-row", "non-UTF-8 bytes",
         data(text=fixture_text("cbt", "test").replace("Tansy", "T\u00e4nsy", 1).encode("latin-1")), DATA_LS,
         "{t}/data/cbt/test.jsonl:1: not UTF-8 text (byte 0xe4"),
    Case("ff-byte-pairs", "non-UTF-8 bytes", file("pairs.jsonl", pairs_text().encode() + b'{"x": "\xff"}\n'), SELECT,
         "{t}/pairs.jsonl:5: not UTF-8 text (byte 0xff"),
    Case("latin1-config", "non-UTF-8 bytes", file("c.yaml", "task: cbt\n# r\u00e9sum\u00e9\n".encode("latin-1")),
         ["eval", "--config", "{t}/c.yaml", "--out", "{t}/out"], "{t}/c.yaml: not UTF-8 text (byte 0xe9"),
    # a byte-order mark
    Case("bom-data", "BOM", data(text=b"\xef\xbb\xbf" + fixture_text("cbt", "test").encode()), EVAL_CBT,
         "{t}/data/cbt/test.jsonl:1: not valid JSON (Unexpected UTF-8 BOM"),
    Case("bom-pairs", "BOM", file("pairs.jsonl", b"\xef\xbb\xbf" + pairs_text().encode()), SELECT,
         "{t}/pairs.jsonl:1: not valid JSON (Unexpected UTF-8 BOM"),
    # huge contexts
    Case("huge-cbt-sentence", "huge contexts", data(change=lambda r: r[6]["sentences"].__setitem__(0, BIG)), EVAL_CBT,
         "{t}/data/cbt/test.jsonl:7: 25"),
    Case("huge-hotpot-question", "huge contexts", data("hotpotqa", "train", change=lambda r: r[0].update(question=BIG)),
         [*DRY_RUN, "--task", "hotpotqa", "--data-dir", D], "{t}/data/hotpotqa/train.jsonl:1: 25"),
    # duplicate ids
    Case("arc-repeated-id", "duplicate ids", data("arc_c", change=lambda r: r[3].update(id=r[0]["id"])),
         ["eval", "--task", "arc_c", "--data-dir", D, "--out", "{t}/out"],
         "{t}/data/arc_c/test.jsonl:4: id 'Fixture_0037' repeats line 1"),
    Case("hotpot-repeated-id", "duplicate ids", data("hotpotqa", "train", change=lambda r: r.append(dict(r[2]))),
         [*DRY_RUN, "--task", "hotpotqa", "--data-dir", D], "{t}/data/hotpotqa/train.jsonl:25: id "),
    # answers not among the options
    Case("cbt-answer", "answer not among options", data(change=lambda r: r[4].update(answer="zebra")), DATA_LS,
         "{t}/data/cbt/test.jsonl:5: answer 'zebra' is not among the options"),
    Case("arc-answer-key", "answer not among options", data("arc_c", change=lambda r: r[0].update(answerKey="E")),
         ["eval", "--task", "arc_c", "--data-dir", D, "--out", "{t}/out"],
         "{t}/data/arc_c/test.jsonl:1: answerKey 'E' is not among the labels"),
    Case("mmlu-answer-index", "answer not among options", data("mmlu", "train", change=lambda r: r[0].update(answer=7)),
         [*DRY_RUN, "--task", "mmlu", "--data-dir", D], "{t}/data/mmlu/train.jsonl:1: answer 7 is not an index"),
    # unknown config keys
    Case("yaml-nested-key", "unknown config keys", file("c.yaml", "select:\n  influence:\n    etaa: 0.1\n"),
         [*DRY_RUN, "--config", "{t}/c.yaml"], "{t}/c.yaml: select.influence: unknown config key 'etaa'"),
    Case("synth-override", "unknown config keys", nothing, ["synth", "--out", "{t}/out", "questons=3"],
         "unknown config key 'questons'; did you mean: questions"),
    Case("select-lora-key", "unknown config keys", file("pairs.jsonl", pairs_text()), [*SELECT, "lora.rank=8"],
         "unknown config key 'lora.rank'"),
    # wrong types
    Case("int-as-word", "wrong types", nothing, ["eval", "--out", "{t}/out", "max_turns=many"],
         "eval override: max_turns must be int, got 'many'"),
    Case("yaml-list-for-int", "wrong types", file("c.yaml", "batch_size: [1, 2]\n"),
         ["eval", "--config", "{t}/c.yaml", "--out", "{t}/out"], "{t}/c.yaml: batch_size must be int, got [1, 2]"),
    Case("bool-as-number", "wrong types", nothing, [*DRY_RUN, "sft.from_initial=2"],
         "sft.from_initial must be bool, got '2'"),
    # out-of-range values
    Case("alpha-zero", "out-of-range values", nothing, [*DRY_RUN, "alpha=0"], "alpha must be in (0, 1], got 0.0"),
    Case("alpha-flag", "out-of-range values", file("pairs.jsonl", pairs_text()), [*SELECT, "--alpha", "1.5"],
         "--alpha: alpha must be in (0, 1], got 1.5"),
    Case("negative-eta", "out-of-range values", nothing, [*DRY_RUN, "influence.eta=-1e-5"],
         "influence.eta must be positive, got -1e-05"),
    Case("negative-temperature", "out-of-range values", nothing, ["eval", "--out", "{t}/out", "temperature=-1"],
         "temperature must be at least 0, got -1.0"),
    Case("dropout-one", "out-of-range values", nothing, [*DRY_RUN, "lora.dropout=1"],
         "lora.dropout must be in [0, 1), got 1.0"),
    Case("zero-tokens", "out-of-range values", nothing, ["synth", "--out", "{t}/out", "max_new_tokens=0"],
         "max_new_tokens must be at least 1, got 0"),
    Case("V-over-the-split", "out-of-range values", nothing,
         ["run", "--config", "smoke", "--selector", "dits", "--task", "cbt", "--data-dir", str(FIXTURES), "--dry-run",
          "--out", "{t}/suite", "select.validation_size=50"],
         "cbt/validation has 12 questions; influence.validation_size is 50"),
    # unknown names
    Case("task", "unknown names", nothing, ["eval", "--task", "hotpot", "--out", "{t}/out"],
         "unknown task 'hotpot'; did you mean: hotpotqa"),
    Case("selector", "unknown names", nothing, [*DRY_RUN[:3], "--selector", "ditz", "--dry-run"],
         "unknown selector 'ditz'; did you mean: dits"),
    Case("model", "unknown names", nothing, ["eval", "--model", "smollm3", "--out", "{t}/out"],
         "unknown model 'smollm3'"),
    Case("backend", "unknown names", nothing, ["eval", "--data-dir", str(FIXTURES), "--out", "{t}/out", "backend=vllm"],
         "unknown backend 'vllm'; valid: hf, llama.cpp, openai"),
    Case("preset", "unknown names", nothing, ["run", "--preset", "papr", "--dry-run"],
         "unknown preset or config file 'papr'; presets: cpu, paper, smoke"),
    Case("roster", "unknown names", nothing, ["eval", "--out", "{t}/out", "roster=trio"], "unknown roster 'trio'"),
    # read only by a stage hours into a run: refused before its first
    Case("influence-path", "unknown names", nothing, [*DRY_RUN, "influence.path=fsat"],
         "influence.path must be one of reference, fast, server, screen, got 'fsat'"),
    Case("search-method", "unknown names", nothing, [*DRY_RUN, "synth.method=tao"],
         "unknown search method 'tao'; did you mean: toa"),
    # the data directory
    Case("eval-no-dir", "data directory missing or a file", nothing, EVAL_CBT, "{t}/data: data directory not found"),
    Case("ls-no-dir", "data directory missing or a file", nothing, DATA_LS, "{t}/data: data directory not found"),
    Case("eval-dir-is-file", "data directory missing or a file", file("data", "x"), EVAL_CBT,
         "{t}/data: a file, not a data directory"),
    Case("ls-dir-is-file", "data directory missing or a file", file("data", "x"), DATA_LS,
         "{t}/data: a file, not a data directory"),
    # an output directory that cannot be written (the permission case runs as a subprocess below)
    Case("out-under-a-file", "unwritable output directory", both(file("pairs.jsonl", pairs_text()), file("f", "x")),
         [*SELECT[:-1], "{t}/f/runs/select"], "{t}/f/runs/select: cannot write it (Not a directory)"),
    # a corrupted run record on --resume
    Case("spec-cut", "corrupted run record on --resume", resume_record(lambda r: json.dumps(r).encode()[:200]), RESUME,
         "run_spec.json: not a readable run record"),
    Case("spec-not-utf8", "corrupted run record on --resume", resume_record(lambda r: b"\xff\xfe{}"), RESUME,
         "run_spec.json: not a readable run record"),
    Case("spec-no-stages", "corrupted run record on --resume", resume_record(without("stages")), RESUME,
         "run_spec.json: (top): 'stages' is a required property"),
    # a resume of another schema version's records
    Case("schema-2", "other schema version on --resume", resume_record(lambda r: r | {"schema_version": 2}), RESUME,
         "run_spec.json: schema_version 2, and this harness resumes version 1 only"),
    Case("no-schema-version", "other schema version on --resume", resume_record(without("schema_version")), RESUME,
         "written by an older harness (no schema_version in run_spec.json)"),
]


# -- the checks ---------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its size and sha256 (folders as such). A kernel lock file
    (`.lock`) counts by its presence only: taking the lock writes the holder's pid into it."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = ("dir",)
        for name in files:
            path = Path(folder) / name
            rel = os.path.relpath(path, root)
            out[rel] = ("lock",) if name == ".lock" else (path.stat().st_size,
                                                           hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def filled(items, t: Path) -> list[str]:
    return [item.replace("{t}", str(t)) for item in items]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default output (runs/...) would land in the tree compared
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(filled(case.argv, tmp_path))
    lines = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert case.expect.replace("{t}", str(tmp_path)) in lines[0]
    assert snapshot(tmp_path) == before


def test_every_category_has_a_case():
    categories = {c.category for c in CASES}
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert categories >= {"malformed JSONL", "missing or mistyped fields", "empty splits", "non-UTF-8 bytes", "BOM",
                          "huge contexts", "duplicate ids", "answer not among options", "unknown config keys",
                          "wrong types", "out-of-range values", "unknown names", "data directory missing or a file",
                          "unwritable output directory", "corrupted run record on --resume",
                          "other schema version on --resume"}


def test_a_dataset_without_ids_keeps_a_repeated_row_as_its_own_item(tmp_path):
    from harness.tasks import get_task

    data("mmlu", change=lambda r: r.insert(1, dict(r[0])))(tmp_path)  # MMLU's auxiliary_train repeats rows
    questions = get_task("mmlu").load("test", tmp_path / "data")
    assert questions[0].question == questions[1].question and questions[1].id == f"{questions[0].id}-2"
    assert len({q.id for q in questions}) == len(questions) == 25


# -- as subprocesses: the real exit status, a full disk, a folder the process may not write ------
def harness(argv: list[str], preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True, text=True, cwd=ROOT,
                          preexec_fn=preexec_fn, timeout=120)


def one_line_exit_2(done: subprocess.CompletedProcess, expect: str) -> None:
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("not-json", "preset", "schema-2")], ids=lambda c: c.id)
def test_as_a_subprocess(case, tmp_path):
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    one_line_exit_2(harness(filled(case.argv, tmp_path)), case.expect.replace("{t}", str(tmp_path)))
    assert snapshot(tmp_path) == before


def file_size_limit(limit: int):
    def preexec() -> None:
        # SIGXFSZ would kill the process at the limit; ignored, the write fails with EFBIG instead
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "pairs.jsonl").write_text(pairs_text(200, chosen="x" * 100))  # selected.jsonl: about 20 kB
    before = snapshot(tmp_path)
    done = harness(filled(SELECT[:-1] + ["{t}/out/select"], tmp_path), preexec_fn=file_size_limit(4096))
    one_line_exit_2(done, f"{tmp_path}/out/select/selected.jsonl: cannot write it (File too large)")
    assert snapshot(tmp_path) == before  # neither the select folder nor out/ it made for it


@pytest.fixture
def read_only(tmp_path):
    """A folder this process may not write: its mode for a user; for root, whom modes do not stop,
    a read-only tmpfs mounted on it (unmounted after), or a skip where mounting is not allowed."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("running as root, and no read-only mount is allowed here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_an_unwritable_output_directory_is_one_line_and_leaves_nothing(tmp_path, read_only, capsys):
    (tmp_path / "pairs.jsonl").write_text(pairs_text())
    before = snapshot(tmp_path)
    assert main(filled(SELECT[:-1] + [str(read_only / "select")], tmp_path)) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {read_only}/select: cannot write it ("), lines
    assert snapshot(tmp_path) == before
