"""llama.cpp's OpenAI-compatible server, started by the harness for each policy it serves.

`backend=llama.cpp` converts the policy (a catalogue model or a directory a run trained) once to a
GGUF (`gguf_export`, at `server.precision`), starts `python -m llama_cpp.server` on it at a free
loopback port, and talks to it as any OpenAI-compatible server (`OpenAIBackend`). The server keeps
every position's logits (`--logits_all`), which the prompt scoring needs. It is stopped when the
backend is collected or the process exits, and dies with the process that started it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import httpx

from harness import models
from harness.backends.gguf_export import gguf_for
from harness.backends.openai import OpenAIBackend, served_name
from harness.cache import cache_root
from harness.errors import HarnessError

STARTUP_SECONDS = 180
GGML_F32 = 0  # ggml's type id for float32 (its key/value cache types)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: killed when the parent dies (Linux), so no server outlives its run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LlamaCppServer:
    """One `llama_cpp.server` process on 127.0.0.1 serving one GGUF under `alias`."""

    def __init__(self, gguf: Path, alias: str, threads: int | None = None, context: int = 4096,
                 port: int | None = None, f32_cache: bool = False):
        """`f32_cache`: keys and values kept in f32 (llama.cpp's default is f16, which alone moves
        an f32 model's logits by a few hundredths)."""
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(context),
                   "--n_threads", str(threads or os.cpu_count() or 1), "--logits_all", "true", "--verbose", "false"]
        if f32_cache:
            command += ["--type_k", str(GGML_F32), "--type_v", str(GGML_F32)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self._stop = weakref.finalize(self, _stop, self.process, self.log)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise HarnessError(f"llama.cpp server exited with status {self.process.returncode} at start: "
                                   f"{_last_line(self.log.name)}")
            try:
                if httpx.get(self.base_url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise HarnessError(f"llama.cpp server did not answer within {STARTUP_SECONDS} s: {_last_line(self.log.name)}")

    def stop(self) -> None:
        self._stop()


def _stop(process: subprocess.Popen, log) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()
    Path(log.name).unlink(missing_ok=True)


def _last_line(log: str) -> str:
    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


class LlamaCppBackend(OpenAIBackend):
    """A policy served by a llama.cpp server this backend starts (and stops with itself)."""

    settings = ("batch_size", "server")

    def __init__(self, model: str, server, batch_size: int = 32):
        try:
            import llama_cpp.server  # noqa: F401  (the server's own dependencies come with it)
        except ImportError:
            raise HarnessError("backend llama.cpp needs llama.cpp's server: CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" "
                               "pip install 'dits-harness[server]' (scripts/install.sh does)") from None
        directory = models.resolve(model)
        gguf = gguf_for(directory, cache_root() / "gguf", server.precision)
        self.llama_server = LlamaCppServer(gguf, alias=served_name(server, model), threads=server.threads,
                                           context=server.context, f32_cache=server.precision == "f32")
        info = {"name": model, "path": str(directory), "sha256": models.weights_hash(directory),
                "precision": server.precision, "gguf": str(gguf)}
        super().__init__(model, server, batch_size, base_urls=[self.llama_server.base_url], flavour="llama.cpp",
                         model_info=info)
        # The weights and their precision say which model answers; the port is this process's.
        del self.model_info["base_url"]
        self.model_info["backend"] = "llama.cpp"

    def close(self) -> None:
        super().close()
        self.llama_server.stop()
