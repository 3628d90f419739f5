"""Training launched under `accelerate launch` (harness.train.launch): the checks a config meets
before any work, and DPO in two CPU processes against one process with the same global batch."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from harness import config, models
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.train import launch
from test_dits import write_pairs


def run_config(*overrides: str) -> RunConfig:
    return config.build(RunConfig, "smoke", list(overrides))


@pytest.mark.parametrize("overrides, message", [
    (["train.launcher=torchrun"], "train.launcher must be one of process, accelerate"),
    (["train.num_processes=2"], "need train.launcher=accelerate"),
    (["train.launcher=accelerate", "train.num_processes=0"], "train.num_processes must be at least 1"),
    (["train.launcher=accelerate", "train.num_processes=3", "dpo.grad_accum=2", "sft.grad_accum=3"],
     "dpo.grad_accum 2 cannot be split over train.num_processes 3"),
    (["train.launcher=accelerate", "train.accelerate_config=zero9"], "zero9 is neither a file nor one of ddp, zero3"),
    (["train.launcher=accelerate", "train.num_processes=2", "dpo.grad_accum=2", "sft.grad_accum=2",
      "train.accelerate_config=zero3"], "DeepSpeed needs device=cuda"),
])
def test_a_launch_the_harness_cannot_run_is_refused_in_one_line(overrides, message):
    with pytest.raises(HarnessError, match=message):
        launch.check(run_config(*overrides))


def test_a_users_accelerate_config_must_agree_on_the_processes(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    cfg = run_config("train.launcher=accelerate", "train.num_processes=2", "dpo.grad_accum=2", "sft.grad_accum=2",
                     f"train.accelerate_config={bad}")
    with pytest.raises(HarnessError, match="num_processes 4 but train.num_processes 2"):
        launch.check(cfg)
    bad.write_text("- not a mapping\n")
    with pytest.raises(HarnessError, match="not an accelerate config"):
        launch.check(cfg)


def test_the_paper_preset_trains_under_accelerate_with_zero3_and_validates():
    from harness.experiment.plan import make_plan

    run = make_plan("paper").run
    assert (run.train.launcher, run.train.num_processes, run.train.accelerate_config) == ("accelerate", 8, "zero3")
    flags = launch.launch_flags(run)
    assert flags[:2] == ["--config_file", str(launch.ACCELERATE_CONFIGS / "zero3.yaml")]
    assert flags[flags.index("--num_processes") + 1] == "8"


def test_the_launch_is_no_part_of_a_runs_identity():
    from harness.experiment.plan import make_plan

    one = make_plan("smoke", ["dpo.grad_accum=2", "sft.grad_accum=2"])
    two = make_plan("smoke", ["dpo.grad_accum=2", "sft.grad_accum=2", "train.launcher=accelerate", "train.num_processes=2"])
    assert (one.run_id, one.key) == (two.run_id, two.key)


def merged_weights(out) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def test_dpo_in_two_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    """Two gloo processes of one pair a step each against one process accumulating two: the same
    global batches in the same order, so the same steps up to the all-reduce's float rounding."""
    pairs = [json.loads(line) for line in write_pairs(tmp_path, "cbt").read_text().splitlines()]
    one = run_config("dpo.batch_size=1", "dpo.grad_accum=2", "dpo.epochs=2")
    two = dataclasses.replace(one, train=dataclasses.replace(one.train, launcher="accelerate", num_processes=2,
                                                             accelerate_config="ddp"))
    single = launch.train_stage("dpo", "tiny-fitted", pairs, one, tmp_path / "one")
    double = launch.train_stage("dpo", "tiny-fitted", pairs, two, tmp_path / "two")

    assert single["steps"] == double["steps"] == 6  # 6 pairs, global batch 2, 2 epochs
    losses = [[row["loss"] for row in s["log"] if "loss" in row] for s in (single, double)]
    assert len(losses[0]) == len(losses[1]) == 6
    assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-6)
    base = load_file(models.resolve("tiny-fitted") / "model.safetensors")
    a, b = merged_weights(tmp_path / "one"), merged_weights(tmp_path / "two")
    assert a.keys() == b.keys() == base.keys()
    moved = max((a[k] - base[k]).abs().max().item() for k in a)
    apart = max((a[k] - b[k]).abs().max().item() for k in a)
    assert apart < 1e-3 * moved, (apart, moved)
    assert (tmp_path / "two" / "stats.json").exists() and not (tmp_path / "two" / "job").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_training_stage_killed_after_a_checkpoint_resumes_from_it(tmp_path):
    """`harness train` with checkpoints every 2 steps, killed (SIGKILL) once one is complete, then
    started again: it resumes from the checkpoint and ends where an uninterrupted stage ends."""
    pairs_file = write_pairs(tmp_path, "cbt")
    knobs = ["dpo.batch_size=1", "dpo.epochs=2"]
    out = tmp_path / "stage"
    cmd = [sys.executable, "-m", "harness", "train", "--stage", "dpo", "--data", str(pairs_file), "--model",
           "tiny-fitted", "--config", "smoke", "--out", str(out), *knobs, "train.checkpoint_steps=2"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = tmp_path / ".stage.checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 300
    while not done.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert done.exists() and not out.exists()

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = json.loads((out / "stats.json").read_text())
    assert resumed["resumed_from_step"] >= 2 and resumed["steps"] == 12
    assert not (tmp_path / ".stage.checkpoints").exists()

    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    whole = launch.train_stage("dpo", "tiny-fitted", pairs, run_config(*knobs), tmp_path / "whole")
    assert whole["resumed_from_step"] == 0
    a, b = merged_weights(out), merged_weights(tmp_path / "whole")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
