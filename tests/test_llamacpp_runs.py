"""Whole commands through llama.cpp's server: a smoke `harness run` whose every policy is exported
to GGUF and served (`backend=llama.cpp`), and `harness synth` through an OpenAI-compatible endpoint
that fails in the middle of the search and is resumed.

Answers are generated (`answer_mode=generate`): llama-cpp-python's prompt scoring walks the whole
vocabulary at every prompt position in Python, seconds an option on CPU (README, "Engines")."""

import json

from llama_servers import FaultProxy, require_llama_server, tiny_server

from harness.cli import main


def said(run_dir):
    """Each dialogue's utterances, in order."""
    return [[t["text"] for t in json.loads(line)["transcript"]]
            for line in (run_dir / "per_instance.jsonl").read_text().splitlines()]


def test_a_smoke_run_serves_every_policy(shared_data, tmp_path):
    require_llama_server()
    common = ["--config", "smoke", "--task", "triviaqa", "--data-dir", str(shared_data)]
    assert main(["run", *common, "--selector", "random", "--out", str(tmp_path / "runs"), "answer_mode=generate",
                 "backend=llama.cpp"]) == 0
    run = next((tmp_path / "runs").glob("run:*"))
    shared = next((tmp_path / "runs" / "shared").iterdir())
    initial = next((tmp_path / "runs" / "initial").iterdir())
    evals = [initial / "eval_initial", shared / "it0" / "eval_sft", run / "it0" / "eval"]
    specs = [json.loads((e / "run_spec.json").read_text())["model"] for e in evals]
    assert all(s["backend"] == "llama.cpp" and s["precision"] == "f32" and s["gguf"] for s in specs)
    assert len({s["sha256"] for s in specs}) == 3  # the initial, SFT and DPO policies, each served
    # Served in f32 with an f32 key/value cache, the initial policy decodes as the HF engine does.
    assert main(["eval", *common, "--model", "tiny-fitted", "--limit", "8", "--out", str(tmp_path / "hf"),
                 "answer_mode=generate"]) == 0
    assert said(evals[0]) == said(tmp_path / "hf")


def test_a_synth_cut_by_a_failing_server_resumes_to_the_same_pairs(shared_data, tmp_path):
    server = tiny_server(tmp_path / "gguf")
    proxy = FaultProxy(("127.0.0.1", server.port))
    overrides = ["answer_mode=generate", "trees_per_batch=2", "backend=openai", "server.flavour=llama.cpp",
                 "server.retries=1", "server.backoff=0.01", f"server.base_urls={proxy.base_url}"]

    def synth(out, *flags):
        return main(["synth", "--config", "smoke", "--task", "triviaqa", "--data-dir", str(shared_data),
                     "--out", str(tmp_path / out), *flags, *overrides])

    try:
        assert synth("whole") == 0
        requests = proxy.seen.count("forward")
        proxy.fail_after(requests * 3 // 4)  # in the second batch of trees
        assert synth("cut") == 1
        assert not (tmp_path / "cut").exists() and (tmp_path / ".cut.partial").is_dir()
        proxy.fail_after(None)
        assert synth("cut", "--resume") == 0
    finally:
        proxy.close()
        server.stop()
    assert json.loads((tmp_path / "cut" / "cost.json").read_text())["resumed_trees"] == 2
    trees = [[{k: v for k, v in t.items() if k != "batch_cost"} for t in map(json.loads, open(run / "trees.jsonl"))]
             for run in (tmp_path / "whole", tmp_path / "cut")]
    assert trees[0] == trees[1]
    assert (tmp_path / "cut" / "pairs.jsonl").read_text() == (tmp_path / "whole" / "pairs.jsonl").read_text()
