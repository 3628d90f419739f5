"""Fixtures of the micro-benchmarks (`pytest benchmarks/ --benchmark-only`): the model they run on
and the influence paths built on it, once a session.

pytest's `testpaths` is `tests`, so a plain `pytest` never collects this folder."""

import json
import os

import pytest

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("HARNESS_CBT_SAMPLE", "1")  # CBT's shipped sample: no spaCy build of the books

# Per model: the preset whose knobs the influence paths take, and the sizes measured. SmolLM2's are
# the cpu preset's on CBT (agents' prompts of ~1,000 tokens, units of 5 pairs); tiny-fitted's are a
# quick check that every benchmark runs.
MODELS = {
    "smollm2-135m": {"preset": "cpu", "batch": 8, "cache_length": 1024, "prompt_length": 1024,
                     "context_length": 500, "options": 4, "max_turns": 10},
    "tiny-fitted": {"preset": "smoke", "batch": 4, "cache_length": 256, "prompt_length": 256,
                    "context_length": 128, "options": 4, "max_turns": 4},
}
TASK = "cbt"


def pytest_addoption(parser):
    parser.addoption("--micro-model", default=os.environ.get("HARNESS_BENCH_MODEL", "smollm2-135m"),
                     choices=sorted(MODELS), help="the model the micro-benchmarks run on (default: "
                     "$HARNESS_BENCH_MODEL, else smollm2-135m; tiny-fitted for a fast check)")


def pytest_configure(config):
    # `--benchmark-only` asks for the benchmarks, so it overrides pyproject's `--benchmark-disable`
    # (which keeps the test suite from timing anything); pytest-benchmark refuses the pair otherwise.
    # This runs before pytest-benchmark's own pytest_configure (trylast), which reads the options.
    if config.getoption("benchmark_only", False):
        config.option.benchmark_enable = True


@pytest.fixture(scope="session")
def sizes(request) -> dict:
    name = request.config.getoption("--micro-model")
    return {"model": name, **MODELS[name]}


@pytest.fixture(scope="session")
def backend(sizes):
    from harness.backends.hf import HFBackend

    return HFBackend(sizes["model"], batch_size=sizes["batch"])


@pytest.fixture(scope="session")
def select_config(sizes):
    """The preset's select section on the benchmark's model and task: V = 1 (one dialogue checked),
    no warm-up step (theta* is the fresh adapter)."""
    from harness.config import SelectConfig, build

    return build(SelectConfig, sizes["preset"], {"model": sizes["model"], "task": TASK, "selector": "dits",
                                                 "max_turns": sizes["max_turns"],
                                                 "influence": {"validation_size": 1, "warmup_steps": 0}})


@pytest.fixture(scope="session")
def pairs(sizes, select_config) -> list[dict]:
    """One unit of pairs on train questions, grown (as far as `prepare` checks) by the benchmark's
    model: at Alice's first turn, the gold option over a wrong one."""
    from harness import models
    from harness.mas.dialogue import start
    from harness.mas.roster import task_and_roster

    task, roster = task_and_roster(select_config)
    _, _, info = models.load(sizes["model"])
    size = select_config.influence.unit_size
    rows = []
    for d in start(task.load("train")[:size], roster):
        q = d.question
        wrong = next(o for o in q.options if o != q.golds[0])
        rows.append({"pair_id": f"{TASK}:{q.id}/n0", "question_id": q.id, "task": TASK,
                     "policy": {"name": sizes["model"], "sha256": info["sha256"]}, "prompt": d.messages(0),
                     "chosen": f"Alice: <A>{q.golds[0]}</A>", "rejected": f"Alice: <A>{wrong}</A>",
                     "q_chosen": 0.5, "q_rejected": 0.1, "answer_mode": "generate"})
    return json.loads(json.dumps(rows))  # as read back from pairs.jsonl


@pytest.fixture(scope="session")
def fast_path(pairs, select_config):
    """The fast path with theta*'s one validation dialogue decoded (its draft)."""
    from harness.dits.influence import FastPath, prepare

    path = FastPath(pairs, select_config, *prepare(pairs, select_config))
    path.theta_star_dialogues()
    return path
