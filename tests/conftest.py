import logging
import os
from pathlib import Path

import pytest

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("HARNESS_CBT_SAMPLE", "1")  # cbt reads its sample; tests/test_cbt_default.py builds the books


class ShownPastCapture(logging.Handler):
    """Writes a record to the terminal while pytest captures output: a first run builds the models
    inside tests and fixtures for minutes, and would look hung without their one-line notice."""

    def __init__(self, config: pytest.Config):
        super().__init__(logging.WARNING)
        self.config = config

    def emit(self, record: logging.LogRecord) -> None:
        with self.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            self.config.get_terminal_writer().line("\n" + self.format(record))  # off the progress dots


@pytest.hookimpl(trylast=True)  # after pytest's own plugins have registered
def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("capturemanager") and config.pluginmanager.has_plugin("terminalreporter"):
        logging.getLogger("harness.models").addHandler(ShownPastCapture(config))


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real samples of every task (../shared/data beside the checkout, as in CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not here")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_random():
    from harness.backends.hf import HFBackend

    return HFBackend("tiny-random", batch_size=8)


@pytest.fixture(scope="session")
def tiny_fitted():
    from harness.backends.hf import HFBackend

    return HFBackend("tiny-fitted", batch_size=8)


SMOKE_SELECTORS = ("random", "qvalue", "optima_full", "dits:gamma=0", "dits")
SMOKE_ARGS = ["--config", "smoke", "--task", "arc_c"]
# ARC-C's suite above covers the selectors; one run each covers the other tasks (webwalker's in
# tests/test_web_agents.py).
SMOKE_TASKS = ("cbt", "mmlu", "hotpotqa", "2wmh", "triviaqa")


@pytest.fixture(scope="session")
def smoke_suite(tmp_path_factory):
    """The smoke preset's suite on ARC-C: every selector with seeds 0 and 1, and one influence budget
    point (validation_size 2) for the DITS runs. Shared by the run and report tests."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("suite")
    assert main(["suite", *SMOKE_ARGS, "--selectors", ",".join(SMOKE_SELECTORS), "--seeds", "0,1",
                 "--budgets", "select.validation_size=2", "--out", str(root)]) == 0
    return root


@pytest.fixture(scope="session")
def smoke_tasks(tmp_path_factory):
    """The smoke preset's run of the random selector, seed 0, on every other task: one suite each."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("tasks")
    for task in SMOKE_TASKS:
        assert main(["suite", "--config", "smoke", "--task", task, "--selectors", "random", "--seeds", "0",
                     "--out", str(root / task)]) == 0
    return root
