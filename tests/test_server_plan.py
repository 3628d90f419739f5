"""The server influence path's request plan (`harness/dits/influence/server_plan.py`: names, batches,
order, retry policy), and vLLM's adapter client on the wire against a loopback HTTP server that records
each request and answers with vLLM's replies, scripted from vLLM's source
(vllm/entrypoints/openai/models/serving.py; docs/vllm-adapters.md). No vLLM runs here: it does not
install on these machines."""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from harness.backends.openai import ServerError
from harness.dits.influence.adapter_client import VLLMAdapterClient
from harness.dits.influence.server_plan import (DONE, FATAL, LOAD, RELOAD, RETRY, SUBMIT, THETA_STAR, UNLOAD,
                                                adapter_name, batch_plan, batches, outcome, unit_label)
from harness.errors import HarnessError

KEY = "0123456789abcdef"
SERVERS = ("http://a:8000/v1", "http://b:8000/v1")


# -- names -------------------------------------------------------------------------------------
def test_a_name_holds_the_key_the_unit_and_the_weights():
    name = adapter_name(KEY, unit_label(3), "ab" * 32)
    assert name == f"dits-{KEY}-u3-{'ab' * 6}"
    assert adapter_name(KEY, "u3", "ab" * 32) == name  # stable: the same weights of the same unit
    others = {adapter_name("fedcba9876543210", "u3", "ab" * 32),  # another estimate
              adapter_name(KEY, "u4", "ab" * 32),  # another unit
              adapter_name(KEY, "u3", "cd" * 32),  # the same unit's other weights (another eta)
              adapter_name(KEY, THETA_STAR, "ab" * 32)}
    assert name not in others and len(others) == 4


@pytest.mark.parametrize("key, label, digest, what", [
    ("", "u0", "ab12", "estimate key"),
    ("ab/cd", "u0", "ab12", "estimate key"),
    (KEY, "u 0", "ab12", "label"),
    (KEY, "u0", "", "weights digest"),
])
def test_a_name_refuses_parts_a_server_path_could_not_hold(key, label, digest, what):
    with pytest.raises(HarnessError, match=f"adapter's {what} must be letters and digits"):
        adapter_name(key, label, digest)


# -- batches and order ------------------------------------------------------------------------
@pytest.mark.parametrize("units, max_loras, expected", [
    (range(5), 2, [[0, 1], [2, 3], [4]]),
    (range(4), 4, [[0, 1, 2, 3]]),
    (range(3), 8, [[0, 1, 2]]),
    (range(3), 1, [[0], [1], [2]]),
    ([], 3, []),
])
def test_units_are_cut_in_order_into_batches_of_at_most_max_loras(units, max_loras, expected):
    assert batches(units, max_loras) == expected


def test_max_loras_below_one_is_one_line():
    with pytest.raises(HarnessError, match="influence.max_loras must be at least 1, got 0"):
        batches(range(3), 0)


def plan(labels=("u0", "u1", "u2"), servers=SERVERS, questions=2):
    return batch_plan(KEY, [(label, f"{i:x}" * 16, f"/dev/shm/x/{label}") for i, label in enumerate(labels)],
                      servers, questions)


def test_a_batch_loads_everywhere_then_submits_once_then_unloads_everywhere():
    p = plan()
    steps = p.steps()
    actions = [s.action for s in steps]
    assert actions == [LOAD] * 6 + [SUBMIT] + [UNLOAD] * 6
    loads, unloads = steps[:6], steps[7:]
    every = {(server, a.name) for a in p.adapters for server in SERVERS}
    assert {(s.server, s.adapter.name) for s in loads} == every == {(s.server, s.adapter.name) for s in unloads}
    assert [s.adapter.path for s in loads[::2]] == ["/dev/shm/x/u0", "/dev/shm/x/u1", "/dev/shm/x/u2"]
    assert len({a.name for a in p.adapters}) == 3


def test_the_dialogues_of_all_units_go_together_and_come_back_to_their_units():
    p = plan(questions=3)
    rows = p.rows()
    assert [(a.label, q) for a, q in rows] == [(u, q) for u in ("u0", "u1", "u2") for q in range(3)]
    answers = [f"{a.label}/q{q}" for a, q in rows]  # each result says whose it is
    back = p.collate(answers)
    assert back == {u: [f"{u}/q{q}" for q in range(3)] for u in ("u0", "u1", "u2")}
    with pytest.raises(ValueError, match="8 results for 3 adapters x 3 questions"):
        p.collate(answers[:-1])


@pytest.mark.parametrize("labels, servers, questions, error, message", [
    (("u0", "u0"), SERVERS, 2, ValueError, "distinct labels"),
    ((), SERVERS, 2, ValueError, "distinct labels"),
    (("u0",), (), 2, HarnessError, "no servers to load the adapters on"),
    (("u0",), SERVERS, 0, ValueError, "needs validation questions"),
])
def test_a_batch_plan_refuses_what_it_cannot_run(labels, servers, questions, error, message):
    with pytest.raises(error, match=message):
        plan(labels, servers, questions)


# -- retry policy -----------------------------------------------------------------------------
ALREADY = "The lora adapter 'x' has already been loaded. If you want to load the adapter in place, set " \
          "'load_inplace' to True."
GONE = "The lora adapter 'x' cannot be found."
NO_FILES = "Loading lora x failed: No adapter found for /dev/shm/x"


@pytest.mark.parametrize("action, status, detail, attempt, kind", [
    (LOAD, 200, "", 0, DONE),
    (UNLOAD, 200, "", 0, DONE),
    (LOAD, None, "ConnectError", 0, RETRY),  # no answer: refused, timed out, dropped
    (LOAD, 500, "", 1, RETRY),
    (LOAD, 503, "", 0, RETRY),
    (UNLOAD, 429, "", 0, RETRY),
    (UNLOAD, 408, "", 2, RETRY),
    (LOAD, 400, ALREADY, 1, DONE),  # after a retry: our own earlier attempt landed
    (LOAD, 400, ALREADY, 0, RELOAD),  # first try: a killed run's, whose files may be gone
    (UNLOAD, 404, GONE, 0, DONE),  # not loaded is what an unload wants
    (UNLOAD, 404, GONE, 1, DONE),
    (LOAD, 404, NO_FILES, 0, FATAL),  # the server cannot read adapter_dir
    (LOAD, 404, "Not Found", 0, FATAL),  # no such route: runtime loading is off
    (UNLOAD, 404, "Not Found", 0, FATAL),
    (LOAD, 400, "Both 'lora_name' and 'lora_path' must be provided.", 0, FATAL),
    (UNLOAD, 400, ALREADY, 1, FATAL),  # "already loaded" only excuses a load
    (LOAD, 401, "", 0, FATAL),
])
def test_the_retry_policy(action, status, detail, attempt, kind):
    assert outcome(action, status, detail, attempt).kind == kind


@pytest.mark.parametrize("detail, hint", [(NO_FILES, "influence.adapter_dir must be a directory the server sees"),
                                          ("Not Found", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True")])
def test_a_fatal_404_says_what_to_change(detail, hint):
    assert hint in outcome(LOAD, 404, detail, 0).reason


# -- vLLM's client on the wire ----------------------------------------------------------------
class RecordingServer:
    """A loopback HTTP server that records every request (method, path, JSON body) and answers each
    with the next scripted (status, body), else 200 with vLLM's plain-text success line. The scripts
    below copy vLLM's replies; this checks what the client sends and how it reads the answers."""

    def __init__(self):
        self.received: list[tuple[str, str, dict]] = []
        self.script: deque[tuple[int, dict]] = deque()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.received.append(("POST", self.path, body))
                status, reply = owner.script.popleft() if owner.script else (200, None)
                done = "added" if self.path.endswith("/load_lora_adapter") else "removed"
                data = (json.dumps(reply) if reply is not None else
                        f"Success: LoRA adapter '{body['lora_name']}' {done} successfully.").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if reply is not None else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def vllm_error(status: int, message: str, kind: str) -> tuple[int, dict]:
    """vLLM's ErrorResponse body (vllm/entrypoints/serve/utils/error_response.py)."""
    return status, {"error": {"message": message, "type": kind, "param": None, "code": status}}


@pytest.fixture
def recording():
    server = RecordingServer()
    yield server
    server.close()


def client(server: RecordingServer, retries: int = 2) -> VLLMAdapterClient:
    return VLLMAdapterClient({server.base_url: httpx.Client(timeout=5)}, retries=retries, backoff=0.001)


def test_load_and_unload_post_vllms_bodies_to_its_routes(recording):
    c = client(recording)
    c.load(recording.base_url, "dits-k-u0-ab", "/dev/shm/d/u0")
    c.unload(recording.base_url, "dits-k-u0-ab")
    assert recording.received == [("POST", "/v1/load_lora_adapter", {"lora_name": "dits-k-u0-ab",
                                                                      "lora_path": "/dev/shm/d/u0"}),
                                  ("POST", "/v1/unload_lora_adapter", {"lora_name": "dits-k-u0-ab"})]


LOAD_BODY = ("POST", "/v1/load_lora_adapter", {"lora_name": "n", "lora_path": "/p"})
UNLOAD_BODY = ("POST", "/v1/unload_lora_adapter", {"lora_name": "n"})


@pytest.mark.parametrize("script, sent", [
    ([vllm_error(500, "engine busy", "InternalServerError")], [LOAD_BODY, LOAD_BODY]),
    # the first answer lost to a 500 after the load took: the retry hears "already loaded", ours
    ([vllm_error(500, "x", "InternalServerError"), vllm_error(400, ALREADY, "InvalidUserInput")],
     [LOAD_BODY, LOAD_BODY]),
    # "already loaded" at once: a killed run's adapter, unloaded and loaded again from our files
    ([vllm_error(400, ALREADY, "InvalidUserInput")], [LOAD_BODY, UNLOAD_BODY, LOAD_BODY]),
])
def test_a_load_is_retried_or_reloaded_as_the_policy_says(recording, script, sent):
    recording.script.extend(script)
    client(recording).load(recording.base_url, "n", "/p")
    assert recording.received == sent


def test_a_reload_needs_no_retries_to_spare(recording):
    recording.script.append(vllm_error(400, ALREADY, "InvalidUserInput"))
    client(recording, retries=0).load(recording.base_url, "n", "/p")
    assert recording.received == [LOAD_BODY, UNLOAD_BODY, LOAD_BODY]


def test_an_unload_of_what_is_gone_is_done(recording):
    recording.script.append(vllm_error(404, GONE, "NotFoundError"))
    client(recording).unload(recording.base_url, "n")
    assert recording.received == [UNLOAD_BODY]


@pytest.mark.parametrize("script, error, message", [
    ([(404, {"detail": "Not Found"})], HarnessError, r"HTTP 404: Not Found; the server has no runtime LoRA endpoints"),
    ([vllm_error(404, NO_FILES, "NotFoundError")], HarnessError, "No adapter found for /dev/shm/x; the server cannot"),
    ([vllm_error(503, "overloaded", "ServiceUnavailable")] * 3, ServerError,
     r"load_lora_adapter \(n\): HTTP 503 \(overloaded\) after 3 attempts"),
])
def test_a_failed_load_is_one_line(recording, script, error, message):
    recording.script.extend(script)
    with pytest.raises(error, match=message) as failure:
        client(recording).load(recording.base_url, "n", "/p")
    assert "\n" not in str(failure.value)
    assert len(recording.received) == len(script)  # fatal at once; transient until the retries run out


def test_a_server_that_does_not_answer_is_retried_then_fails():
    from harness.backends.llamacpp import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match=r"ConnectError .* after 2 attempts"):
        VLLMAdapterClient({url: httpx.Client(timeout=2)}, retries=1, backoff=0.001).unload(url, "n")
