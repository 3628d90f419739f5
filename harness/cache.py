"""Where the harness keeps what it builds once (converted models, data built from the shipped books)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$HARNESS_CACHE`, by default `~/.cache/harness`."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")
