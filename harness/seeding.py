"""Seeds: every random generator a run touches, and seeds derived for its named pieces."""

from __future__ import annotations

import hashlib
import random


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators (LoRA initialisation, shuffles)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(*parts) -> int:
    """A seed for one named piece of a run, independent of how the others are scheduled."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)
