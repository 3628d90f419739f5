"""`harness bench`: the fractions' formulas, the weights a decoding step reads, the machine's name, the
parts' selection, and one quick run on tiny-fitted whose document holds every figure (the llama.cpp
engine's through a real server). The smoke part is left out of the quick run: it is the smoke
experiment itself (about a minute), which tests/test_packaging.py runs the same way, in its own
process."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness import machine, models
from harness.bench.decode import bandwidth_fraction, flop_fraction
from harness.bench.run import PARTS, chosen_parts
from harness.bench.subject import Subject, matmul_weights
from harness.cli import main
from harness.errors import HarnessError
from llama_servers import require_llama_server


@pytest.mark.parametrize("params, tokens_per_second, peak, expected", [
    (100, 10.0, 2000.0, 1.0),  # 2 x 100 x 10 FLOP/s of 2,000
    (135_000_000, 20.0, 1.0e11, 0.054),
    (8_000_000_000, 1_000.0, 8.0e14, 0.02),
])
def test_compute_fraction_counts_two_flops_per_weight_per_token(params, tokens_per_second, peak, expected):
    assert flop_fraction(params, tokens_per_second, peak) == pytest.approx(expected)


@pytest.mark.parametrize("weight_bytes, steps_per_second, bandwidth, expected", [
    (1_000, 5.0, 10_000.0, 0.5),
    (540_000_000, 20.0, 1.08e10, 1.0),  # SmolLM2 in fp32 at 20 steps/s against 10.8 GB/s
    (16_000_000_000, 100.0, 3.2e12, 0.5),
])
def test_bandwidth_fraction_reads_the_weights_once_a_step(weight_bytes, steps_per_second, bandwidth, expected):
    assert bandwidth_fraction(weight_bytes, steps_per_second, bandwidth) == pytest.approx(expected)


def test_batching_raises_the_compute_fraction_not_the_bandwidth_fraction():
    # The same step rate at batch 8 makes 8 times the tokens from one read of the weights.
    steps = 10.0
    assert flop_fraction(1000, 8 * steps, 1e6) == pytest.approx(8 * flop_fraction(1000, steps, 1e6))
    assert bandwidth_fraction(4000, steps, 1e6) == bandwidth_fraction(4000, steps, 1e6)


@pytest.mark.parametrize("tied", [True, False])
def test_matmul_weights_count_each_linear_weight_once_and_no_untied_embedding(tied):
    hidden, inter, vocab, layers, heads, kv = 32, 64, 100, 2, 4, 2
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    head_dim = hidden // heads
    attention = hidden * hidden * 2 + 2 * hidden * kv * head_dim  # q, o; k, v
    per_layer = attention + 3 * hidden * inter  # gate, up, down
    expected = layers * per_layer + vocab * hidden  # the head, tied or not; never the input embedding too
    assert matmul_weights(model) == (expected, 2 * expected)


@pytest.mark.parametrize("info, name", [
    ({"gpu": "NVIDIA H100 80GB HBM3", "cpu": "AMD EPYC 9654", "cpu_count": 16}, "nvidia-h100-80gb-hbm3"),
    ({"cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2}, "intel-r-xeon-r-processor-2c"),
    ({"cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_count": 2}, "amd-epyc-7b13-64-core-processor-2c"),
])
def test_machine_names_are_file_names(info, name):
    assert machine.name(info) == name


def test_parts_run_in_order_and_unknown_ones_are_refused(capsys):
    assert chosen_parts(None, None) == PARTS.names()
    assert chosen_parts(["search", "limits"], None) == ["limits", "search"]
    assert chosen_parts(None, ["smoke", "dialogues"]) == ["limits", "decode", "search", "influence"]
    with pytest.raises(HarnessError, match="did you mean: decode"):
        chosen_parts(["decod"], None)
    assert main(["bench", "--only", "limits", "--skip", "influenze"]) == 2
    assert "unknown bench part 'influenze'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_cuda_bench_without_a_gpu_is_refused_in_one_line(capsys):
    assert main(["bench", "--only", "limits", "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_a_random_model_is_seeded_and_speaks_with_the_named_tokenizer(tmp_path):
    def weights(seed):
        return Subject("tiny-fitted", "cpu", "float32", tmp_path / str(seed), random_init=True, seed=seed).model()

    first, again, other = weights(1), weights(1), weights(2)
    fitted = models.load("tiny-fitted")[0]
    name = "model.layers.0.mlp.up_proj.weight"
    state = [m.state_dict()[name] for m in (first, again, other, fitted)]
    assert torch.equal(state[0], state[1])
    assert not torch.equal(state[0], state[2]) and not torch.equal(state[0], state[3])
    subject = Subject("tiny-fitted", "cpu", "float32", tmp_path / "1", random_init=True, seed=1)
    loaded = models.load(subject.directory())
    assert loaded[2]["sha256"] == subject.identity() != models.weights_hash(models.resolve("tiny-fitted"))
    assert loaded[1].chat_template  # the agents' chat template came with the tokenizer


FIGURES = {
    "limits": {"matmul_peak": "FLOP/s", "memory_bandwidth": "bytes/s"},
    "decode": {"decode_b1_tokens_per_second": "tokens/s", "decode_b8_tokens_per_second": "tokens/s",
               "batching_speedup": "x", "decode_b1_compute_fraction": "of peak",
               "decode_b8_compute_fraction": "of peak", "decode_b1_bandwidth_fraction": "of bandwidth",
               "decode_b8_bandwidth_fraction": "of bandwidth"},
    "dialogues": {"hf_dialogues_per_second": "dialogues/s", "llama.cpp_dialogues_per_second": "dialogues/s",
                  "hf_completion_tokens_per_second": "tokens/s", "llama.cpp_completion_tokens_per_second": "tokens/s",
                  "hf_over_llama_cpp": "x"},
    "search": {"rollouts_per_second": "rollouts/s", "search_completion_tokens_per_second": "tokens/s"},
    "influence": {"reference_units_per_second": "units/s", "fast_units_per_second": "units/s",
                  "fast_over_reference": "x", "same_f_per_unit": "bool", "distinct_f_values": "count"},
}


def test_quick_bench_on_tiny_fitted_writes_every_figure(tmp_path, capsys):
    require_llama_server()
    out = tmp_path / "bench-{machine}.json"
    assert main(["bench", "--model", "tiny-fitted", "--quick", "--skip", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (written,) = tmp_path.glob("bench-*.json")
    doc = json.loads(written.read_text())
    assert written.name == f"bench-{doc['machine']['name']}.json"
    assert doc["machine"]["cpu_count"] and doc["machine"]["cpu"] and doc["versions"]["torch"]
    assert doc["command"] and doc["created"] and doc["sizes"]["name"] == "quick" and doc["seed"] == 0
    assert doc["model"]["name"] == "tiny-fitted" and doc["model"]["matmul_params"] > 0
    assert list(doc["parts"]) == list(FIGURES)
    for part, figures in FIGURES.items():
        result = doc["parts"][part]
        assert "error" not in result and not result.get("unavailable"), (part, result)
        assert {name: f["unit"] for name, f in result["figures"].items()} == figures
        for name in figures:
            assert name in printed
    decode = doc["parts"]["decode"]["figures"]
    for name, f in decode.items():
        if name.endswith("_fraction"):  # far below the limits on a 2-layer model, never above them
            assert 0 < f["value"] < 1, (name, f)
    assert decode["decode_b8_tokens_per_second"]["value"] > decode["decode_b1_tokens_per_second"]["value"]
    limits = doc["parts"]["limits"]["figures"]
    assert 1e8 < limits["matmul_peak"]["value"] < 1e16 and 1e8 < limits["memory_bandwidth"]["value"] < 1e14
    for part in ("dialogues", "search", "influence"):
        assert all(f["value"] > 0 for f in doc["parts"][part]["figures"].values()), part
