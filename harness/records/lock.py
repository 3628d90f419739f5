"""Kernel locks (`flock`) on the directories a process works in: a run directory, a suite's shared
stages. The kernel drops a lock when its holder exits however it exits (`kill -9` included), so a
lock that is held means a live process: a run's "running" status is believed only then."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError

FILE = ".lock"  # dot-named: copies of a suite's records leave it out


@contextmanager
def hold(directory: Path, wait: bool = False, progress=print):
    """Hold the lock of `directory` (created if missing) while the block runs. Another holder:
    refused with one line, or with `wait`, waited for (saying so once)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise HarnessError(f"{directory}: process {holder} is working in it (a second process on the same "
                                   "run is refused); wait for it to end, or stop it") from None
            progress(f"waiting for process {holder}, which is working in {directory}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def held(directory: Path) -> bool:
    """Whether a live process holds the lock of `directory` (this one included)."""
    path = Path(directory) / FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
