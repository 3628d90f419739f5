"""The server influence path (`influence.path=server`) against llama.cpp's real server (tiny-fitted in
f32), through the byte-forwarding proxy of tests/llama_servers.py, which records every request.

llama.cpp's server has no adapter endpoints (vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter),
so the path is given an adapter client whose load and unload do nothing but record (`RecordedAdapters`):
vLLM's adapter endpoints are NOT exercised here (tests/test_server_plan.py checks the requests vLLM's
client sends; docs/vllm-adapters.md says what is untested). Everything else runs for real: the unit
steps, each adapter written with peft and named after its weights, the batches, every unit's
validation dialogues submitted together over HTTP each naming its unit's adapter, the answers collated
back to their units, the retries. llama.cpp answers with its base weights whatever adapter a request
names, so every unit's F through the server must equal theta*'s through the same server.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from llama_servers import DROP, HTTP_500, FaultProxy, tiny_server
from test_dits import select_config, write_pairs

from harness.cli import main
from harness.dits.influence import Estimate, ServerPath, prepare
from harness.dits.influence.server_path import ADAPTER_WEIGHTS

KEY = "5e1ec7ed0ddba115"  # an estimate's key, as `estimator.estimate` passes it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = tiny_server(tmp_path_factory.mktemp("gguf"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"), "arc_c")


class RecordedAdapters:
    """The adapter client for a server without adapter endpoints (llama.cpp's): load and unload only
    record, each with how many requests the proxy had received by then. A load also checks that the
    adapter's files are there and that its name holds their digest; `on_load(name)` runs after it."""

    def __init__(self, proxy: FaultProxy):
        self.proxy, self.events, self.paths, self.on_load = proxy, [], [], None

    def load(self, server: str, name: str, path: str) -> None:
        weights = Path(path) / ADAPTER_WEIGHTS
        assert (Path(path) / "adapter_config.json").is_file()
        assert name.endswith("-" + hashlib.sha256(weights.read_bytes()).hexdigest()[:12])
        self.events.append(("load", server, name, len(self.proxy.received)))
        self.paths.append(path)
        if self.on_load:
            self.on_load(name)

    def unload(self, server: str, name: str) -> None:
        self.events.append(("unload", server, name, len(self.proxy.received)))


def config(proxy: FaultProxy, **influence):
    """Three units of two pairs, served two at a time; three validation questions."""
    return select_config(selector="dits", validation_size=3, unit_size=2, warmup_steps=1, warmup_batch=2,
                         lora={"r": 4, "alpha": 4}, max_new_tokens=16, backend="openai",
                         server={"base_urls": proxy.base_url, "flavour": "llama.cpp", "retries": 2,
                                 "backoff": 0.01, "concurrency": 4},
                         influence={"path": "server", "max_loras": 2, **influence})


def chat_requests(proxy: FaultProxy) -> list[tuple[int, str, list[dict]]]:
    """(arrival index, model named, messages) of each chat request the proxy received."""
    out = []
    for i, raw in enumerate(proxy.received):
        head, _, body = raw.partition(b"\r\n\r\n")
        if head.startswith(b"POST /v1/chat/completions"):
            sent = json.loads(body)
            out.append((i, sent["model"], sent["messages"]))
    return out


@dataclass
class Served:
    path: ServerPath
    adapters: RecordedAdapters
    proxy: FaultProxy
    estimate: Estimate
    calls: list[set]  # the adapters each generate call of the path's backend named


def serve(server, pairs_file, on_load=None, **influence) -> Served:
    """An estimate on the server path through a fresh proxy; `on_load(proxy, name)` runs after each load."""
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    proxy = FaultProxy(("127.0.0.1", server.port))
    try:
        cfg = config(proxy, **influence)
        adapters = RecordedAdapters(proxy)
        if on_load:
            adapters.on_load = lambda name: on_load(proxy, name)
        path = ServerPath(pairs, cfg, *prepare(pairs, cfg), key=KEY, adapters=adapters)
        calls, generate = [], path.backend.generate

        def recorded(requests, sampling, seed=0):  # what each call carries, then the call itself
            calls.append({r.adapter for r in requests})
            return generate(requests, sampling, seed)

        path.backend.generate = recorded
        return Served(path, adapters, proxy, path.run(), calls)
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def served(server, pairs_file):
    return serve(server, pairs_file)


def loaded(served: Served) -> dict[str, str]:
    """The loaded adapters' names by label (star, u0, u1, ...)."""
    return {name.split("-")[2]: name for action, _, name, _ in served.adapters.events if action == "load"}


def test_every_unit_gets_theta_stars_f_from_a_server_that_ignores_adapters(served):
    estimate = served.estimate
    assert estimate.path == "server" and len(estimate.units) == 3
    assert estimate.f_after == [estimate.f_before] * 3 and estimate.changed_answers == [0] * 3
    assert estimate.items_after == [estimate.items_before] * 3 and len(estimate.items_before) == 3
    assert estimate.validation_dialogues == 3 * (1 + 3)  # theta*'s, then each unit's
    assert estimate.usage["requests"] > 0 and estimate.usage["retries"] == 0
    assert set(estimate.unit_seconds) == {"step", "validation", "adapters"}


def test_adapters_load_before_their_batchs_requests_and_unload_after(served):
    events, names = served.adapters.events, loaded(served)
    assert [(action, name.split("-")[2]) for action, _, name, _ in events] == [
        ("load", "star"), ("unload", "star"),
        ("load", "u0"), ("load", "u1"), ("unload", "u0"), ("unload", "u1"),
        ("load", "u2"), ("unload", "u2")]
    assert {server for _, server, _, _ in events} == {served.proxy.base_url}
    assert all(n.startswith(f"dits-{KEY}-") for n in names.values())
    assert len({n.rsplit("-", 1)[1] for n in names.values()}) == 4  # theta* and each unit: weights of their own
    at = {(action, name): count for action, _, name, count in events}
    requests = chat_requests(served.proxy)
    assert {model for _, model, _ in requests} == set(names.values())  # every request named its adapter
    for name in names.values():
        arrived = [i for i, model, _ in requests if model == name]
        assert at["load", name] <= min(arrived) and max(arrived) < at["unload", name]
        for q in served.path.validation:  # a dialogue on each validation question
            assert any(q.question in m["content"] for _, model, messages in requests if model == name
                       for m in messages)
    # The same weights answer everywhere: each adapter's dialogues take as many requests
    assert len({sum(model == n for _, model, _ in requests) for n in names.values()}) == 1


def test_the_units_of_a_batch_speak_in_the_same_calls(served):
    names = loaded(served)
    star, u0, u1, u2 = (names[label] for label in ("star", "u0", "u1", "u2"))
    batch = [c for c in served.calls if c & {u0, u1}]
    assert batch and all(c == {u0, u1} for c in batch)  # every turn of the batch: both units in one call
    assert [c for c in served.calls if c - {u0, u1}] == [c for c in served.calls if c in ({star}, {u2})]
    # theta*'s batch and each batch of units take one call a turn, the same turns (the same dialogues)
    assert sum(c == {star} for c in served.calls) == len(batch) == sum(c == {u2} for c in served.calls) > 1


def test_adapter_files_are_written_to_ram_and_removed(served):
    root, paths = served.path.adapter_root, served.adapters.paths
    assert root == "/dev/shm" or not Path("/dev/shm").is_dir()
    assert len(paths) == 4 and all(p.startswith(f"{root}/dits-{KEY}-") for p in paths)
    assert not any(Path(p).exists() for p in paths)


def test_faults_in_a_batch_are_retried_and_change_nothing(server, pairs_file, served, tmp_path):
    def fail_the_next_two(proxy, name):  # the first requests of the first batch of units
        if "-u1-" in name:
            proxy.inject(HTTP_500, DROP)

    faulty = serve(server, pairs_file, on_load=fail_the_next_two, adapter_dir=str(tmp_path))
    clean, estimate = served.estimate, faulty.estimate
    assert faulty.proxy.seen.count(HTTP_500) == 1 and faulty.proxy.seen.count(DROP) == 1
    assert estimate.usage["retries"] == 2
    assert (estimate.f_before, estimate.f_after, estimate.items_after) == (clean.f_before, clean.f_after,
                                                                           clean.items_after)
    assert all(p.startswith(str(tmp_path)) for p in faulty.adapters.paths) and not any(tmp_path.iterdir())


def test_a_server_without_adapter_endpoints_stops_the_selection_in_one_line(server, pairs_file, tmp_path, capsys):
    """The vLLM client against llama.cpp's server, which has no /v1/load_lora_adapter."""
    shm = Path("/dev/shm")
    before = set(shm.glob("dits-*")) if shm.is_dir() else set()
    out = tmp_path / "sel"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(out), "--config", "smoke",
                 "backend=openai", "influence.path=server", f"server.base_urls={server.base_url}",
                 "server.flavour=llama.cpp", "server.retries=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "/v1/load_lora_adapter (dits-" in err and "-star-" in err
    assert "HTTP 404: Not Found; the server has no runtime LoRA endpoints" in err
    assert not out.exists() and (set(shm.glob("dits-*")) if shm.is_dir() else set()) == before


@pytest.mark.parametrize("overrides, message", [
    (["backend=openai"], "influence estimates run on the hf backend"),
    (["influence.path=server"], "influence.path=server answers on the servers of backend=openai"),
    (["backend=openai", "influence.path=server", "max_loras=0"], "influence.max_loras must be at least 1, got 0"),
])
def test_the_server_path_and_the_openai_backend_go_together(pairs_file, tmp_path, capsys, overrides, message):
    out = tmp_path / "sel"
    assert main(["select", "--selector", "dits", "--pairs", str(pairs_file), "--out", str(out), "--config", "smoke",
                 *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists()
