"""Trust boundaries (issue 26): paths read from records and manifests stay under their root, model
weights load from safetensors only, nothing unpickles, servers listen on loopback; each guard refused
case by case, and the package's source checked for the calls that would cross them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import runs
from harness.cli import main
from harness.errors import HarnessError
from harness.records import manifest, spec

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


# -- paths named by files never leave their root ----------------------------------------------
@pytest.mark.parametrize("relative", ["../../etc/passwd", "/etc/passwd", "a/../../outside", "link/passwd"],
                         ids=["dot-dot", "absolute", "dot-dot-inside", "symlink-out"])
def test_inside_refuses_a_path_leaving_its_root(tmp_path, relative):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "link").symlink_to("/etc")
    with pytest.raises(HarnessError, match="leads outside it") as e:
        runs.inside(root, relative)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("relative", ["a/file.json", "a/../file.json", "file.json"])
def test_inside_keeps_a_path_under_its_root(tmp_path, relative):
    assert runs.inside(tmp_path, relative) == tmp_path / relative


def test_a_manifest_naming_a_file_outside_its_stage_is_a_problem_never_read(tmp_path):
    stage = tmp_path / "run" / "stage"
    stage.mkdir(parents=True)
    (stage / "out.json").write_text("{}")
    manifest.write(stage)
    doc = json.loads((stage / manifest.FILE).read_text())
    doc["files"]["../../../../../../etc/passwd"] = {"size": 1, "sha256": "0" * 64}
    (stage / manifest.FILE).write_text(json.dumps(doc))
    [problem] = manifest.problems(stage)
    assert "'../../../../../../etc/passwd' leads outside it" in problem


def record(tmp_path: Path, stage_path: str) -> Path:
    """A run record (as `harness run` writes it, in suite folder `tmp_path/suite`) whose stage names `stage_path`."""
    suite = tmp_path / "suite"
    run_dir = suite / "run:x"
    run_dir.mkdir(parents=True)
    doc = {"schema_version": spec.SCHEMA_VERSION, "run_id": "run:x", "kind": "run", "config": {}, "seed": 0,
           "versions": {}, "git_sha": None, "command": [], "shared_stages": str(suite / "shared" / "k"),
           "shared_key": "k", "pools": {}, "device": {"device": "cpu"},
           "stages": [{"stage": "sft_data", "path": stage_path, "shared": True}]}
    (run_dir / spec.FILE).write_text(json.dumps(doc))
    return run_dir


@pytest.mark.parametrize("stage_path, message", [
    ("/etc", "names '/etc', outside its suite folder"),
    ("{suite}/../../etc", "leads outside it"),
    ("{suite}/shared/k/../../../../etc", "leads outside it"),
], ids=["absolute-elsewhere", "dot-dot", "dot-dot-deeper"])
def test_a_run_record_naming_a_stage_outside_its_suite_is_refused(tmp_path, capsys, stage_path, message):
    run_dir = record(tmp_path, stage_path.format(suite=tmp_path / "suite"))
    with pytest.raises(HarnessError, match=message):
        spec.relocate(json.loads((run_dir / spec.FILE).read_text()), run_dir,
                      json.loads((run_dir / spec.FILE).read_text())["stages"][0]["path"])
    assert main(["validate", "--run", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_run_record_naming_its_own_stage_is_relocated(tmp_path):
    run_dir = record(tmp_path, str(tmp_path / "suite" / "shared" / "k" / "sft_data"))
    moved = tmp_path / "copy" / run_dir.name
    moved.parent.mkdir()
    run_dir.rename(moved)
    recorded = json.loads((moved / spec.FILE).read_text())
    where = spec.relocate(recorded, moved, recorded["stages"][0]["path"])
    assert where == tmp_path / "copy" / "shared" / "k" / "sft_data"


# -- weights: safetensors only ------------------------------------------------------------------
@pytest.mark.parametrize("files", [["pytorch_model.bin"], [], ["model.ckpt", "pytorch_model-00001.bin"]],
                         ids=["pickle-bin", "no-weights", "pickles-only"])
def test_a_model_directory_without_safetensors_is_refused_before_loading(tmp_path, files):
    from harness import models

    (tmp_path / "config.json").write_text("{}")
    for name in files:
        (tmp_path / name).write_bytes(b"\x80\x04not loaded")
    with pytest.raises(HarnessError, match="no \\*.safetensors weights") as e:
        models.load(str(tmp_path))
    assert "safetensors only" in str(e.value)


# -- the source never crosses a boundary ----------------------------------------------------------
def sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def calls(text: str, name: str) -> list[str]:
    """Every call of `name` in `text`, arguments included (balanced parentheses)."""
    found = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        found.append(text[m.start():i])
    return found


@pytest.mark.parametrize("pattern, why", [
    (r"trust_remote_code\s*=\s*True", "runs code shipped with a model"),
    (r"\bpickle\.loads?\(|\bimport pickle\b|\bdill\b|\bjoblib\.load\(", "unpickling runs code"),
    (r"yaml\.(load|unsafe_load|full_load)\(", "YAML tags can build any object"),
    (r"allow_pickle\s*=\s*True", "unpickling runs code"),
    (r"0\.0\.0\.0|[\"']::[\"']", "a server listens on every interface"),
])
def test_the_package_never(pattern, why):
    hits = [f"{p.relative_to(PACKAGE.parent)}:{text[:m.start()].count(chr(10)) + 1}" for p, text in sources()
            for m in re.finditer(pattern, text)]
    assert not hits, why


def test_every_torch_load_is_weights_only():
    unsafe = [c for _, text in sources() for c in calls(text, "torch.load") if "weights_only=True" not in c]
    assert not unsafe


def test_trainer_state_is_read_weights_only_by_the_trainer_the_harness_resumes_with():
    # `train.checkpoint_steps` resumes through transformers' Trainer, which reads the optimizer,
    # scheduler and RNG state the harness's own earlier process wrote: never a full unpickle.
    import transformers.trainer

    loads = calls(Path(transformers.trainer.__file__).read_text(), "torch.load")
    assert loads and all("weights_only=True" in c for c in loads)


def test_every_model_load_is_safetensors_without_remote_code():
    loads = [c for p, text in sources() for c in calls(text, "AutoModelForCausalLM.from_pretrained")
             if "gguf_file" not in c]  # the embedded GGUF is read by gguf's own parser, no pickle involved
    assert loads and all("use_safetensors=True" in c and "trust_remote_code=False" in c for c in loads)


def test_servers_the_harness_starts_listen_on_loopback_only():
    hosts = [m.group(1) for _, text in sources() for m in re.finditer(r'"--host",\s*"([^"]+)"', text)]
    binds = [m.group(1) for _, text in sources() for m in re.finditer(r'\.bind\(\(\s*"([^"]+)"', text)]
    assert hosts and set(hosts + binds) == {"127.0.0.1"}
