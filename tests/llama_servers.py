"""Real servers for the tests: llama.cpp's OpenAI-compatible server, and a byte-forwarding proxy
on loopback in front of it that can inject faults (it is a proxy, not a mock: every answer that is
not an injected fault comes byte for byte from the real server)."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque

import pytest

# What the proxy does with each next request, in order; then it forwards.
FORWARD, HTTP_400, HTTP_500, MALFORMED, SLOW, DROP = "forward", "400", "500", "malformed", "slow", "drop"


def require_llama_server():
    """llama.cpp's server must be importable: the tests that need it fail (never skip) without it."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as e:
        pytest.fail(f"llama-cpp-python[server] is not installed ({e}); run scripts/install.sh", pytrace=False)


def tiny_server(cache_dir):
    """A llama.cpp server on tiny-fitted, exported to f32 GGUF, with an f32 key/value cache: it
    decodes as the HF engine does."""
    require_llama_server()
    from harness import models
    from harness.backends.gguf_export import gguf_for
    from harness.backends.llamacpp import LlamaCppServer

    gguf = gguf_for(models.resolve("tiny-fitted"), cache_dir, "f32")
    return LlamaCppServer(gguf, alias="tiny-fitted", threads=2, context=4096, f32_cache=True)


def _read_message(conn: socket.socket, buffer: bytearray) -> bytes | None:
    """One HTTP/1.1 message (head and Content-Length body) from `conn`; None at end of stream."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    total = len(head) + 4 + length
    while len(buffer) < total:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    message = bytes(buffer[:total])
    del buffer[:total]
    return message


def _reply(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


class FaultProxy:
    """Listens on 127.0.0.1; each request is forwarded to `upstream` (host, port) unless the next
    entry of `faults` says otherwise: a 400 or 500, a 200 with a cut JSON body, a delay of `delay` seconds
    before forwarding, or a dropped connection. Bounded: it serves until `close()`."""

    def __init__(self, upstream: tuple[str, int], delay: float = 2.0):
        self.upstream, self.delay = upstream, delay
        self.faults: deque[str] = deque()
        self.outage: tuple[int, str] | None = None  # (forwarded requests, fault): fail from then on
        self.after_forward = None  # called once, right after the next request reaches the server
        self.seen: list[str] = []  # what happened to each request, in order
        self.received: list[bytes] = []  # each request as it arrived (head and body), in the same order
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def inject(self, *faults: str) -> None:
        with self._lock:
            self.faults.extend(faults)

    def fail_after(self, forwarded: int | None, fault: str = HTTP_500) -> None:
        """Answer every request with `fault` once `forwarded` more have been forwarded (None: heal)."""
        with self._lock:
            self.outage = None if forwarded is None else (self.seen.count(FORWARD) + forwarded, fault)

    def _next(self, request: bytes) -> str:
        with self._lock:
            fault = self.faults.popleft() if self.faults else FORWARD
            if fault == FORWARD and self.outage and self.seen.count(FORWARD) >= self.outage[0]:
                fault = self.outage[1]
            self.seen.append(fault)
            self.received.append(request)
            return fault

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._relay(conn)
        except OSError:  # the client or the server went away: so does this connection
            pass
        finally:
            conn.close()

    def _relay(self, conn: socket.socket) -> None:
        inbound, outbound = bytearray(), bytearray()
        upstream = None
        try:
            while (request := _read_message(conn, inbound)) is not None:
                fault = self._next(request)
                if fault == DROP:
                    return
                if fault in (HTTP_400, HTTP_500):
                    status = "400 Bad Request" if fault == HTTP_400 else "500 Internal Server Error"
                    conn.sendall(_reply(status, b'{"error": {"message": "injected"}}'))
                    continue
                if fault == MALFORMED:
                    conn.sendall(_reply("200 OK", b'{"choices": [{"message": {"content": "cut'))
                    continue
                if fault == SLOW:
                    time.sleep(self.delay)
                if upstream is None:
                    upstream = socket.create_connection(self.upstream)
                upstream.sendall(request)
                hook, self.after_forward = self.after_forward, None
                if hook:  # e.g. kill the server while it holds the request
                    hook()
                response = _read_message(upstream, outbound)
                if response is None:
                    return
                conn.sendall(response)
        finally:
            if upstream is not None:
                upstream.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()
