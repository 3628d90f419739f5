"""Resume after server faults (issue 26, reliability): for each fault the OpenAI backend handles
(a refused connection, a timeout, HTTP 500, malformed JSON, the server killed holding a request),
`harness run`'s stage fails cleanly when its retries run out, and `--resume` completes it to the
records an uninterrupted run writes, from the batches it had finished.

The stage is the run's first, the initial policy's evaluation (two batches of two dialogues), on
`backend=openai` through the fault proxy of tests/llama_servers.py in front of llama.cpp's server on
tiny-fitted; the fault starts at the second batch's first request. It runs as `harness run` runs
it (the executor's run lock, spec and stage runner): a run's later stages need the policies it
trains, which no fixed server holds. Each run lives at the same path as the uninterrupted one did,
so the records name the same paths."""

from __future__ import annotations

import json
import shutil
import socket
import threading

import pytest
from chaos_runs import compare
from llama_servers import DROP, HTTP_500, MALFORMED, SLOW, FaultProxy, tiny_server

from harness.backends.openai import ServerError
from harness.experiment import executor
from harness.experiment.plan import make_plan
from harness.experiment.pools import check_pools
from harness.records import journal, lock, status


class Proxy(FaultProxy):
    """The fault proxy with an action at a chosen request (`at`), and the server behind it going away
    (`refuse`: new connections refused, those held dropped) and coming back on the same port."""

    def __init__(self, upstream):
        super().__init__(upstream, delay=6.0)
        self.trigger = None

    def at(self, offset: int, action) -> None:
        """`action()` when the `offset`-th request from now arrives, before it is handled."""
        self.trigger = (len(self.seen) + offset, action)

    def _next(self, request: bytes) -> str:
        with self._lock:
            action = None
            if self.trigger and len(self.seen) >= self.trigger[0]:
                action, self.trigger = self.trigger[1], None
        if action:
            action()
        return super()._next(request)

    def refuse(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; the port stops listening
        self.listener.close()
        self.fail_after(0, DROP)

    def listen_again(self) -> None:
        self.fail_after(None)
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()


OVERRIDES = ["answer_mode=generate", "backend=openai", "server.flavour=llama.cpp", "server.retries=1",
             "server.backoff=0.01", "batch_size=2", "test_questions=4", "max_turns=4", "max_new_tokens=16"]


def plan_of(root, proxy: Proxy, timeout: float = 30.0):
    return make_plan("smoke", [*OVERRIDES, f"server.base_urls={proxy.base_url}", f"server.timeout={timeout}"],
                     selector="random", task="arc_c", out=str(root))


def chat(raw: bytes) -> str:
    """The messages' text of a chat request as the proxy received it ("" for any other request)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"POST /v1/chat/completions"):
        return ""
    return "\n".join(m["content"] for m in json.loads(body)["messages"])


def first_stage(plan, resume: bool) -> None:
    """`harness run [--resume]` up to the end of its first stage (the executor's own steps)."""
    with lock.hold(plan.run_dir), lock.hold(plan.shared_dir):
        executor._start(plan, check_pools(plan), resume)
        executor._run_stage(plan, plan.stages[0], progress=lambda line: None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server, its proxy, the uninterrupted stage (moved aside) and the requests its first batch took."""
    cache, root = tmp_path_factory.mktemp("gguf"), tmp_path_factory.mktemp("faults")
    server = tiny_server(cache)
    proxy = Proxy(("127.0.0.1", server.port))
    try:
        plan = plan_of(root / "run", proxy)
        before = len(proxy.received)
        first_stage(plan, resume=False)
        # The second batch's first request: the first chat request that asks one of its questions.
        rows = plan.stages[0].path.joinpath("per_instance.jsonl").read_text().splitlines()
        asked = {json.loads(row)["question"] for row in rows[2:]}
        requests = proxy.received[before:]
        second = next(i for i, raw in enumerate(requests) if any(q in chat(raw) for q in asked))
        (root / "run").rename(root / "reference")
        s = {"server": server, "proxy": proxy, "cache": cache, "root": root, "second_batch": second,
             "second_batch_chats": sum(bool(chat(raw)) for raw in requests[second:]),
             "stage": plan.stages[0].path.relative_to(root / "run")}
        yield s
        server = s["server"]  # the killed server's successor
    finally:
        proxy.close()
        server.stop()


def refused(s):
    s["proxy"].refuse()


def killed_mid_request(s):
    s["proxy"].after_forward = s["server"].process.kill  # the server dies holding the next request


FAULTS = {  # the fault from the second batch on, what the stage fails with, and how the server comes back
    "refused": (refused, "Connection refused", lambda s: s["proxy"].listen_again()),
    "timeout": (lambda s: s["proxy"].fail_after(0, SLOW), "ReadTimeout", lambda s: s["proxy"].fail_after(None)),
    "500": (lambda s: s["proxy"].fail_after(0, HTTP_500), "HTTP 500", lambda s: s["proxy"].fail_after(None)),
    "malformed": (lambda s: s["proxy"].fail_after(0, MALFORMED), "malformed JSON reply",
                  lambda s: s["proxy"].fail_after(None)),
    "killed": (killed_mid_request, "after 2 attempts", None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_stage_a_server_fault_failed_resumes_to_an_uninterrupted_runs_records(served, fault):
    proxy, root = served["proxy"], served["root"]
    inject, message, heal = FAULTS[fault]
    # The timeout is an execution setting: the resume may (and here does) run with another.
    plan = plan_of(root / "run", proxy, timeout=3.0 if fault == "timeout" else 30.0)
    try:
        proxy.at(served["second_batch"], lambda: inject(served))
        with pytest.raises(ServerError, match=message):
            first_stage(plan, resume=False)
        assert status.read(plan.run_dir) | {"time": 0} == {"state": "failed", "stage": "eval", "time": 0}
        partial = plan.stages[0].path.parent / f".{plan.stages[0].path.name}.partial" / journal.FILE
        assert len(partial.read_text().splitlines()) == 1  # the first batch, finished before the fault
        if heal:
            heal(served)
        else:  # a new server in the dead one's place, behind the same address
            served["server"].stop()
            served["server"] = tiny_server(served["cache"])
            proxy.upstream = ("127.0.0.1", served["server"].port)
        before = len(proxy.received)
        first_stage(plan_of(root / "run", proxy), resume=True)
        assert not partial.parent.exists()
        # The resume asked for the second batch's dialogues only: the first came from the journal.
        assert sum(bool(chat(raw)) for raw in proxy.received[before:]) == served["second_batch_chats"]
        counted = compare(root / "reference" / served["stage"], root / "run" / served["stage"])
        # Byte for byte but for the timings in the cost records (and the manifest's hashes of them).
        assert counted["files"] == 6 and sorted(counted["volatile"]) == ["cost.json", "stage_cost.json"]
    finally:
        proxy.fail_after(None)
        proxy.trigger = None
        shutil.rmtree(root / "run", ignore_errors=True)
