"""The openai backend against a real llama.cpp server (the embedded SmolLM2 GGUF as it ships), and
its fault handling through a byte-forwarding proxy in front of that server."""

from __future__ import annotations

import json

import pytest

from harness import models
from harness.backends.base import Choice, Request, Sampling
from harness.backends.openai import OpenAIBackend, ServerError
from harness.config import ServerConfig
from harness.errors import HarnessError
from llama_servers import DROP, HTTP_400, HTTP_500, MALFORMED, SLOW, FaultProxy, require_llama_server

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def server():
    require_llama_server()
    from harness.backends.llamacpp import LlamaCppServer

    process = LlamaCppServer(models.smollm2_gguf(), alias="smollm2-135m", threads=2, context=1024)
    yield process
    process.stop()


def client(base_url: str, **server) -> OpenAIBackend:
    return OpenAIBackend("smollm2-135m", ServerConfig(**{"backoff": 0.01, "retries": 2} | server),
                         base_urls=[base_url], flavour="llama.cpp")


def test_generation_is_seeded_per_request_and_counted(server):
    backend = client(server.base_url, concurrency=2)
    greedy = backend.generate([Request(QUESTION)] * 2, Sampling(16))
    assert greedy[0].text == greedy[1].text and "Paris" in greedy[0].text
    sampled = backend.generate([Request(QUESTION, seed=s) for s in (1, 1, 2)], Sampling(24, temperature=1.0))
    assert sampled[0].text == sampled[1].text != sampled[2].text
    short = backend.generate([Request(QUESTION)], Sampling(2))[0]
    assert short.finish_reason == "length" and short.completion_tokens == 2
    stopped = backend.generate([Request(QUESTION)], Sampling(16, stop=("Paris",)))[0]
    assert "Paris" not in stopped.text and stopped.finish_reason == "stop"
    done = greedy + sampled + [short, stopped]
    assert backend.usage.requests == len(done)
    assert backend.usage.completion_tokens == sum(c.completion_tokens for c in done)
    assert backend.usage.prompt_tokens == sum(c.prompt_tokens for c in done) > 0
    assert backend.usage.extra["retries"] == 0


def test_scoring_agrees_with_the_hf_engine(server):
    """The Q4_1 weights as llama.cpp computes them against their fp32 dequantisation in transformers:
    the same ranking, log-likelihoods within a few tenths of a nat."""
    from harness.backends.hf import HFBackend

    backend, hf = client(server.base_url), HFBackend("smollm2-135m", batch_size=4)
    choices = [Choice(QUESTION, (" Paris", " London", " Rome"), prefix="The answer is")]
    served, local = backend.loglikelihood(choices)[0], hf.loglikelihood(choices)[0]
    assert [n for _, n in served] == [n for _, n in local]
    assert sorted(range(3), key=lambda i: served[i][0]) == sorted(range(3), key=lambda i: local[i][0])
    assert max(abs(a - b) for (a, _), (b, _) in zip(served, local)) < 0.5
    texts = ["Paris is the capital of France.", "zxq vlorp capital qq"]
    served_nll, local_nll = backend.turn_nll(texts), hf.turn_nll(texts)
    assert served_nll[0] < served_nll[1]
    assert max(abs(a - b) for a, b in zip(served_nll, local_nll)) < 0.3
    assert backend.usage.scored_tokens == 3 + sum(len(hf.tokenizer(t + "<|im_end|>\n").input_ids) for t in texts)


def test_the_record_names_the_server_and_never_the_key(server, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_API_KEY", "sk-do-not-record-me")
    backend = client(server.base_url, api_key_env="HARNESS_TEST_API_KEY", revision="q4_1-as-shipped")
    info = backend.model_info
    assert info["servers"][0]["model_ids"] == ["smollm2-135m"] and info["revision"] == "q4_1-as-shipped"
    assert info["model_id"] == "smollm2-135m" and info["base_url"] == server.base_url
    assert "sk-do-not-record-me" not in json.dumps(info)
    monkeypatch.delenv("HARNESS_TEST_API_KEY")
    with pytest.raises(HarnessError, match="HARNESS_TEST_API_KEY is not set"):
        client(server.base_url, api_key_env="HARNESS_TEST_API_KEY")


def test_models_are_asked_for_by_their_served_names(server):
    """A policy the run trained is asked for by its own name, never by the initial model's: the
    server lists only what it holds, and llama.cpp's answers for any name."""
    mapped = ServerConfig(model_ids="initial=smollm2-135m", tokenizer="smollm2-135m")
    assert OpenAIBackend("initial", mapped, base_urls=[server.base_url]).model_id == "smollm2-135m"
    with pytest.raises(HarnessError, match=r"does not serve 'runs/x/sft/model' \(it lists smollm2-135m\)"):
        OpenAIBackend("runs/x/sft/model", mapped, base_urls=[server.base_url])
    with pytest.raises(HarnessError, match="server.model_ids: 'initial' is not model=id"):
        OpenAIBackend("initial", ServerConfig(model_ids="initial"), base_urls=[server.base_url])


def test_a_refused_connection_is_one_line():
    from harness.backends.llamacpp import free_port

    with pytest.raises(ServerError, match="no OpenAI-compatible server answers there"):
        client(f"http://127.0.0.1:{free_port()}/v1")


@pytest.mark.parametrize("faults", [(HTTP_500,), (MALFORMED,), (DROP,), (HTTP_500, MALFORMED)])
def test_transient_faults_are_retried(server, faults):
    proxy = FaultProxy(("127.0.0.1", server.port))
    try:
        backend = client(proxy.base_url)
        reference = client(server.base_url).generate([Request(QUESTION)], Sampling(8))
        proxy.inject(*faults)
        assert backend.generate([Request(QUESTION)], Sampling(8)) == reference
        assert backend.usage.extra["retries"] == len(faults)
        assert proxy.seen[-len(faults) - 1:] == [*faults, "forward"]
    finally:
        proxy.close()


def test_persistent_faults_fail_the_call_in_one_line(server):
    proxy = FaultProxy(("127.0.0.1", server.port), delay=3.0)
    try:
        backend = client(proxy.base_url, retries=2, timeout=1.0)
        proxy.inject(SLOW, SLOW, SLOW)
        with pytest.raises(ServerError, match=r"ReadTimeout \(timed out\) after 3 attempts; the stage failed"):
            backend.generate([Request(QUESTION)], Sampling(8))
        proxy.inject(HTTP_500, HTTP_500, HTTP_500)
        with pytest.raises(ServerError, match=r"HTTP 500 \(injected\) after 3 attempts"):
            backend.generate([Request(QUESTION)], Sampling(8))
    finally:
        proxy.close()


def test_a_request_error_is_not_retried(server):
    proxy = FaultProxy(("127.0.0.1", server.port))
    try:
        backend = client(proxy.base_url)
        proxy.inject(HTTP_400)
        with pytest.raises(HarnessError, match="HTTP 400: injected"):
            backend.generate([Request(QUESTION)], Sampling(8))
        assert backend.usage.extra["retries"] == 0 and proxy.seen[-1] == HTTP_400
    finally:
        proxy.close()


def test_a_server_killed_mid_request_fails_the_call():
    require_llama_server()
    from harness.backends.llamacpp import LlamaCppServer

    doomed = LlamaCppServer(models.smollm2_gguf(), alias="smollm2-135m", threads=2, context=1024)
    proxy = FaultProxy(("127.0.0.1", doomed.port))
    try:
        backend = client(proxy.base_url, retries=1)
        proxy.after_forward = doomed.process.kill  # the server dies holding the request
        with pytest.raises(ServerError, match="after 2 attempts"):
            backend.generate([Request(QUESTION)], Sampling(64))
        assert doomed.process.wait(10) is not None
    finally:
        proxy.close()
        doomed.stop()


def test_harness_eval_through_the_server(server, shared_data, tmp_path, capsys):
    from harness.cli import main

    def run(out):
        assert main(["eval", "--task", "triviaqa", "--limit", "2", "--data-dir", str(shared_data), "--out", str(out),
                     "backend=openai", f"server.base_urls={server.base_url}", "server.flavour=llama.cpp",
                     "server.revision=q4_1-as-shipped", "answer_mode=generate", "max_turns=2",
                     "max_new_tokens=16"]) == 0
        return [json.loads(line) for line in (out / "per_instance.jsonl").read_text().splitlines()]

    first, again = run(tmp_path / "a"), run(tmp_path / "b")
    assert [r["transcript"] for r in first] == [r["transcript"] for r in again]
    assert all(t["text"] for r in first for t in r["transcript"])
    spec = json.loads((tmp_path / "a" / "run_spec.json").read_text())
    assert spec["config"]["backend"] == "openai"
    assert spec["model"]["servers"][0]["model_ids"] == ["smollm2-135m"]
    assert spec["model"]["revision"] == "q4_1-as-shipped"
    cost = json.loads((tmp_path / "a" / "cost.json").read_text())
    assert cost["requests"] >= 4 and cost["completion_tokens"] > 0 and cost["retries"] == 0


def test_the_servers_are_no_part_of_a_runs_identity():
    """A run may resume on other servers: the server section is an execution setting."""
    from harness.experiment.executor import _changed
    from harness.experiment.plan import make_plan

    here = make_plan("smoke", ["backend=openai", "server.base_urls=http://a:1/v1", "server.concurrency=2"])
    there = make_plan("smoke", ["backend=openai", "server.base_urls=http://b:2/v1,http://c:3/v1"])
    assert here.key == there.key and here.run_id == there.run_id
    assert {c.server.base_urls for c in (here.run, here.synth, here.eval)} == {"http://a:1/v1"}
    assert here.select.backend == "hf"  # influence trains in this process
    assert _changed(here.configs(), there.configs()) == []
    assert make_plan("smoke", ["backend=llama.cpp"]).key != here.key  # the engine itself is part of it
