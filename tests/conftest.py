import os
from pathlib import Path

import pytest

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")

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
