"""The sites this process serves: each pack started on first use, on 127.0.0.1, and stopped when
the process exits, so a run's stages, and the tree search's thousands of episodes, share one server
a pack. Episodes (`WebEnvironment`) open on the served sites by root URL."""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

from harness.config import WebConfig
from harness.web.env import WebEnvironment
from harness.web.pack import Pack
from harness.web.server import PackServer


class World:
    def __init__(self):
        self._servers: dict[Path, PackServer] = {}
        self._lock = threading.Lock()

    def serve(self, pack_dir: str | Path) -> dict[str, int]:
        """Serve the pack in `pack_dir` (once a process); its root URL -> port."""
        key = Path(pack_dir).resolve()
        with self._lock:
            if key not in self._servers:
                self._servers[key] = PackServer(Pack.load(key)).__enter__()
            server = self._servers[key]
        return {server.pack.root_url: server.port}

    def episode(self, pack_dir: str | Path, limits: WebConfig) -> WebEnvironment:
        """A new episode on the pack's site (not yet reset)."""
        return WebEnvironment(self.serve(pack_dir), limits)

    def stop(self, pack_dir: str | Path) -> None:
        """Stop serving one pack (a temporary one, before its folder goes)."""
        with self._lock:
            server = self._servers.pop(Path(pack_dir).resolve(), None)
        if server is not None:
            server.__exit__()

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.__exit__()
            self._servers.clear()


WORLD = World()
atexit.register(WORLD.close)
