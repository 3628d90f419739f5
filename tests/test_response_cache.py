"""The response cache (`harness.backends.response_cache`): its keys, partial hits equal to no cache,
the tree search and `harness eval` with it (a rerun decodes nothing), two processes on one cache,
a bad cache directory, and that it is no part of a run's identity."""

import json
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from harness.backends.base import Backend, Request, Sampling
from harness.backends.response_cache import (HITS, MISSES, CachedBackend, ResponseCache, model_identity,
                                             request_key)
from harness.cli import main
from harness.errors import HarnessError

HF = {"name": "tiny-random", "path": "/models/tiny-random", "sha256": "a" * 64}
SERVED = {"name": "served", "base_url": "http://localhost:8000/v1", "model_id": "org/model", "revision": "r1"}
ASK = [{"role": "system", "content": "You are Alice."}, {"role": "user", "content": "What is 2+2?"}]
GREEDY, SAMPLED = Sampling(max_new_tokens=12), Sampling(max_new_tokens=12, temperature=0.7)


# -- keys ----------------------------------------------------------------------------------------
def key(request=Request(ASK), sampling=SAMPLED, seed=1, info=HF):
    return request_key(model_identity(info), request, sampling, seed)


def test_identity_takes_every_identifying_key_the_model_info_has():
    assert model_identity(HF) == {"name": "tiny-random", "sha256": "a" * 64}  # not the path: a copy is the same model
    assert model_identity(SERVED) == SERVED


def test_keys_name_what_decides_the_answer():
    assert key() == key()
    assert key(seed=1) != key(seed=2)  # k samples of a prompt are k entries
    assert key(sampling=GREEDY, seed=1) == key(sampling=GREEDY, seed=2)  # greedy: the seed decides nothing
    assert key(sampling=GREEDY) != key(sampling=SAMPLED)
    assert key(sampling=replace(SAMPLED, top_p=0.9)) != key()
    assert key(Request(ASK, adapter="it1")) != key(Request(ASK))
    assert key(Request(ASK, cache_key="dlg1/0")) == key(Request(ASK, cache_key="dlg7/1"))  # a KV-cache hint only
    assert key(Request(ASK[:1])) != key()
    assert key(info=HF | {"sha256": "b" * 64}) != key()  # other weights under the same name
    for field in ("base_url", "model_id", "revision"):
        assert key(info=SERVED | {field: "other"}) != key(info=SERVED)


# -- partial hits --------------------------------------------------------------------------------
class Recording(Backend):
    """An engine that records what it is asked (with a ledger of its own: the fixture's stays as it was)."""

    def __init__(self, inner: Backend):
        super().__init__(inner.model_info, inner.tokenizer, inner.batch_size)
        self.inner, self.asked = inner, []

    def generate(self, requests, sampling, seed=0):
        self.asked.append(list(requests))
        return self.inner.generate(requests, sampling, seed)

    def loglikelihood(self, choices):
        return self.inner.loglikelihood(choices)

    def turn_nll(self, texts):
        self.asked.append(list(texts))
        return self.inner.turn_nll(texts)


def test_a_batch_with_some_hits_is_the_uncached_batch(tiny_random, tmp_path):
    requests = [Request([{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}]) for i in range(6)]
    seeds = Backend.sample_seeds(requests, 5)
    uncached = tiny_random.generate(requests, SAMPLED, seed=5)
    engine = Recording(tiny_random)
    cached = CachedBackend(engine, ResponseCache(tmp_path))
    # Requests 1 and 4 answered before, in a batch of their own with the seeds they have in the whole batch
    before = cached.generate([replace(requests[i], seed=seeds[i]) for i in (1, 4)], SAMPLED, seed=99)
    assert before == [uncached[1], uncached[4]]
    engine.asked.clear()
    assert cached.generate(requests, SAMPLED, seed=5) == uncached  # text, token ids, counts, finish reason
    assert engine.asked == [[replace(requests[i], seed=seeds[i]) for i in (0, 2, 3, 5)]]  # the misses, one call
    assert (cached.usage.extra[HITS], cached.usage.extra[MISSES]) == (2, 6)
    assert cached.usage is engine.usage  # one ledger
    # turn_nll is one entry a call (a text's NLL depends at float level on its padded batch)
    texts = [c.text for c in uncached]
    assert cached.turn_nll(texts) == cached.turn_nll(texts) == tiny_random.turn_nll(texts)
    assert engine.asked[1:] == [texts]


# -- the tree search -----------------------------------------------------------------------------
# ARC-C: its agents also score the options (loglikelihood); two batches of trees; pairs from any gap
# in Q, so that the pairs are compared too whatever the tiny model's fit on this CPU
SYNTH = ["synth", "--config", "smoke", "--task", "arc_c", "--questions", "2", "probe_size=2", "max_turns=4",
         "max_new_tokens=24", "trees_per_batch=1", "dpo_min_gap=0.01"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def grown(run):
    """The trees without their batch's cost, the pairs, the probe without its cost."""
    probe = json.loads((run / "probe.json").read_text())
    return ([{k: v for k, v in t.items() if k != "batch_cost"} for t in read_jsonl(run / "trees.jsonl")],
            read_jsonl(run / "pairs.jsonl"), {k: v for k, v in probe.items() if k != "cost"})


def test_the_tree_search_grows_the_same_trees_and_reruns_from_the_cache(tmp_path):
    cache = str(tmp_path / "cache")
    assert main([*SYNTH, "--out", str(tmp_path / "off")]) == 0
    assert main([*SYNTH, "--out", str(tmp_path / "on"), "--cache", cache]) == 0
    assert main([*SYNTH, "--out", str(tmp_path / "again"), "--cache", cache]) == 0
    trees, pairs, _ = off = grown(tmp_path / "off")
    assert pairs and len(trees) == 2
    assert grown(tmp_path / "on") == off
    assert grown(tmp_path / "again") == off
    first, second = (json.loads((tmp_path / run / "cost.json").read_text()) for run in ("on", "again"))
    assert first["search"][MISSES] > 0 and first["search"]["completion_tokens"] > 0
    for part in (second["search"], second["probe"]):  # nothing decoded or scored again
        assert part[MISSES] == 0 and part[HITS] > 0
        assert part["completion_tokens"] == part["prompt_tokens"] == part["scored_tokens"] == 0


# -- harness eval --------------------------------------------------------------------------------
EVAL = ["eval", "--task", "arc_c", "--model", "tiny-fitted", "--limit", "3", "max_new_tokens=24", "max_turns=4"]


def test_a_second_eval_decodes_nothing_and_writes_the_same(tmp_path):
    cache = tmp_path / "cache"
    preset = tmp_path / "cached.yaml"
    preset.write_text(f"cache: {tmp_path / 'preset-cache'}\n")
    runs = {name: tmp_path / name for name in ("first", "second", "off")}
    assert main([*EVAL, "--out", str(runs["first"]), "--cache", str(cache)]) == 0
    assert main([*EVAL, "--out", str(runs["second"]), "--cache", str(cache)]) == 0
    assert main([*EVAL, "--out", str(runs["off"]), "--config", str(preset), "--no-cache"]) == 0
    for name in ("per_instance.jsonl", "stats.json"):
        assert len({(run / name).read_text() for run in runs.values()}) == 1
    first, second, off = (json.loads((run / "cost.json").read_text()) for run in runs.values())
    assert first[MISSES] > 0 and first[HITS] == 0 and first["completion_tokens"] > 0
    assert second[MISSES] == 0 and second[HITS] == first[MISSES]
    assert second["completion_tokens"] == second["prompt_tokens"] == second["scored_tokens"] == 0
    assert MISSES not in off and not (tmp_path / "preset-cache").exists()  # --no-cache overrode the config
    spec = json.loads((runs["second"] / "run_spec.json").read_text())
    assert spec["config"]["cache"] == str(cache)


# -- two processes -------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    from harness.backends.base import Backend, Completion, Request, Sampling
    from harness.backends.response_cache import CachedBackend, ResponseCache

    class Echo(Backend):  # answers each request with its own content
        def generate(self, requests, sampling, seed=0):
            return [Completion(r.messages[0]["content"] * 2, 1, 2, "stop", 0, (7, 8)) for r in requests]
        def loglikelihood(self, choices): ...
        def turn_nll(self, texts): ...

    backend = CachedBackend(Echo({"name": "echo"}, None, 1), ResponseCache(sys.argv[1]))
    first, last = int(sys.argv[2]), int(sys.argv[3])
    for i in range(first, last):  # one write a request: many short transactions interleave
        backend.generate([Request([{"role": "user", "content": f"q{i}"}])], Sampling(max_new_tokens=4))
    print(backend.usage.extra["response_cache_misses"])
""")


def test_two_processes_write_one_cache_at_once(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), first, last],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for first, last in (("0", "300"), ("150", "450"))]
    outs = []
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        outs.append(out)
    with sqlite3.connect(tmp_path / "cache" / "responses.sqlite") as db:
        assert db.execute("SELECT count(*), count(DISTINCT key) FROM responses").fetchone() == (450, 450)
    echo = model_identity({"name": "echo"})
    stored = ResponseCache(tmp_path / "cache").get(
        [request_key(echo, Request([{"role": "user", "content": f"q{i}"}]), Sampling(max_new_tokens=4), 0)
         for i in range(450)])
    assert [v["text"] for v in stored] == [f"q{i}q{i}" for i in range(450)]
    assert all(v["token_ids"] == [7, 8] and v["finish_reason"] == "stop" for v in stored)
    assert sum(int(out) for out in outs) >= 450  # each computed what it did not find


# -- bad input and records -----------------------------------------------------------------------
def test_a_bad_cache_directory_is_one_line(tmp_path, capsys):
    taken = tmp_path / "a-file"
    taken.write_text("")
    with pytest.raises(HarnessError, match="a-file.*response cache"):
        ResponseCache(taken)
    assert main([*EVAL, "--out", str(tmp_path / "run"), "--cache", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "response cache" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_cache_is_no_part_of_a_runs_identity():
    from harness.experiment.executor import _changed
    from harness.experiment.plan import make_plan

    plain, cached = make_plan("smoke"), make_plan("smoke", cache="/tmp/responses")
    assert cached.key == plain.key and cached.run_id == plain.run_id  # the same shared stages and run
    assert {c.cache for c in (cached.run, cached.synth, cached.select, cached.eval)} == {"/tmp/responses"}
    assert _changed(plain.configs(), cached.configs()) == []  # --resume with the cache on or off
