"""Export a policy (a Hugging Face Llama directory with SmolLM2's tokenizer, or with a byte-level BPE
tokenizer such as the tiny test models') to a GGUF file that llama.cpp loads, e.g. to serve it with
``python -m llama_cpp.server --model <file>``.

What is written, and from where:

- architecture ``llama``; its hyperparameters from ``config.json`` (context length, embedding
  length, block count, feed-forward length, head counts, rope theta and dimension count, RMS norm
  epsilon, vocabulary size);
- every ``tokenizer.*`` key copied byte for byte from the embedded SmolLM2 GGUF
  (`harness.models.smollm2_gguf`), once the directory's tokenizer is checked to have the same
  token-to-id map; the directory's chat template replaces the GGUF's where they differ;
- or, for another byte-level BPE whose ``tokenizer.json`` has GPT-2's pre-tokenizer (``ByteLevel``
  with its regex, no prefix space), no normalizer and a plain BPE model (the tiny test models,
  `harness.tiny`), the ``tokenizer.*`` keys written as convert_hf_to_gguf.py writes a "gpt2"
  vocabulary: model ``gpt2``, pre-tokenizer ``gpt-2`` (llama.cpp's LLAMA_VOCAB_PRE_TYPE_GPT2, whose
  regex is GPT-2's), the tokens in id order as the vocabulary spells them (padded with
  ``[PAD<id>]`` up to ``vocab_size``), their types (CONTROL for the special added tokens,
  USER_DEFINED for other added ones), the merges, the bos, eos and padding ids, whether the
  tokenizer adds a bos or eos, and the chat template. The eos is the tokenizer's; a second end of
  generation of the HF engine (the generation config's eos, `harness.backends.hf`) goes in as the
  end-of-turn id. llama.cpp also ends generation at any token it recognises by its text
  (``<|im_end|>``, ``<|endoftext|>``, ...), whatever the metadata says;
- the weights under llama.cpp's tensor names (gguf's ``TensorNameMap`` for ``MODEL_ARCH.LLAMA``),
  q_proj and k_proj rows permuted from Hugging Face's rotary layout (halves) to llama.cpp's
  (interleaved pairs), as llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) does;
  with tied embeddings (SmolLM2) no ``output.weight``, as in the original GGUF.

Precision: ``f32`` writes every tensor in float32; ``f16`` and ``bf16`` write the matrices (the
embeddings and the projections) in that type and keep the one-dimensional tensors (the RMS norm
weights, any biases) in float32, as convert_hf_to_gguf.py does.

Any other tokenizer (a sentencepiece one, another pre-tokenizer) or architecture: llama.cpp's own
``convert_hf_to_gguf.py`` is the general tool.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

from harness.errors import HarnessError

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "f16", "bf16")
# Hugging Face tensors with no counterpart in a llama.cpp file (recomputed by llama.cpp).
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq",)
_GENERAL_TOOL = "llama.cpp's convert_hf_to_gguf.py is the general tool"


def permute(weights, n_head: int, n_head_kv: int | None = None):
    """Rows of a q_proj (n_head) or k_proj (n_head_kv) weight or bias from Hugging Face's rotary
    layout to llama.cpp's: within each head, HF rotates the first half of the head's dimensions
    against the second half, llama.cpp rotates adjacent pairs. Head ``h`` row ``half * d + i``
    (``half`` in {0, 1}, ``i`` < d = head_dim / 2) moves to row ``2 * i + half``. The same as
    convert_hf_to_gguf.py's ``LlamaModel.permute``; transformers' GGUF loader
    (``LlamaTensorProcessor._reverse_permute_weights``) undoes it."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def _config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise HarnessError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    config = json.loads(path.read_text())
    if config.get("model_type") != "llama" and "LlamaForCausalLM" not in config.get("architectures", []):
        raise HarnessError(f"{model_dir}: the GGUF exporter supports Llama-architecture models only "
                           f"(this one is {config.get('model_type')!r}); {_GENERAL_TOOL}")
    return config


def _rope_theta(config: dict) -> float:
    """rope theta from transformers 5's ``rope_parameters`` or older ``rope_theta``; a scaled rope
    (``rope_type`` other than default) is refused rather than exported wrong."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise HarnessError(f"the GGUF exporter supports unscaled rope only (this model's is {kind!r}); "
                           f"{_GENERAL_TOOL}")
    return float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)


@functools.lru_cache(maxsize=1)
def _reference_tokenizer():
    """(reader of the embedded SmolLM2 GGUF, its tokens in id order); read once a process (seconds)."""
    from gguf import GGUFReader

    from harness.models import smollm2_gguf

    reader = GGUFReader(smollm2_gguf())
    return reader, reader.fields["tokenizer.ggml.tokens"].contents()


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    from harness.models import quiet_bars

    with quiet_bars():
        return AutoTokenizer.from_pretrained(model_dir)


def _chat_template(tokenizer) -> str | None:
    template = tokenizer.chat_template
    return template if isinstance(template, str) else None


def _not_gpt2_bpe(model_dir: Path) -> str | None:
    """Why the directory's ``tokenizer.json`` is not a byte-level BPE that llama.cpp's "gpt-2"
    pre-tokenizer splits as Hugging Face's does (None when it is one): a ``ByteLevel``
    pre-tokenizer with GPT-2's regex and no prefix space, no normalizer, a BPE model without
    subword prefixes or suffixes, byte fallback or ``ignore_merges``, and a ``ByteLevel`` decoder."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return "no tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    pre, model, decoder = spec.get("pre_tokenizer") or {}, spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE":
        return f"its model is {model.get('type')}, not BPE"
    if spec.get("normalizer"):
        return f"it has a {spec['normalizer'].get('type')} normalizer"
    if pre.get("type") != "ByteLevel":
        return f"its pre-tokenizer is {pre.get('type')}, not ByteLevel"
    if not pre.get("use_regex", True):
        return "its ByteLevel pre-tokenizer does not split with GPT-2's regex (use_regex false)"
    if pre.get("add_prefix_space", True):
        return "its ByteLevel pre-tokenizer adds a prefix space"
    if decoder.get("type") != "ByteLevel":
        return f"its decoder is {decoder.get('type')}, not ByteLevel"
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "byte_fallback", "ignore_merges", "dropout"):
        if model.get(key):
            return f"its BPE model sets {key}"
    return None


def _gpt2_vocab(model_dir: Path, tokenizer, config: dict) -> dict:
    """The ``tokenizer.*`` values of a byte-level BPE (`_not_gpt2_bpe` is None) as
    convert_hf_to_gguf.py writes a "gpt2" vocabulary, with the HF engine's end of generation."""
    from gguf import TokenType

    n_vocab = config["vocab_size"]
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= n_vocab:
        raise HarnessError(f"{model_dir}: vocab_size {n_vocab} in config.json but its tokenizer has ids up to "
                           f"{max(vocab.values())}; not a consistent model")
    by_id = {i: token for token, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:  # added tokens are matched in the raw text, before the byte-level mapping
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges") or []]

    # What the tokenizer adds around a text, which llama.cpp must add too (add_bos, add_eos).
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for add_bos, add_eos in ((False, False), (True, False), (False, True), (True, True)):
        if full == [tokenizer.bos_token_id] * add_bos + plain + [tokenizer.eos_token_id] * add_eos:
            break
    else:
        raise HarnessError(f"{model_dir}: its tokenizer encodes 'a' as {full}, {plain} with other tokens than a "
                           f"bos and an eos around it; {_GENERAL_TOOL}")

    # The HF engine stops at the generation config's eos (the model config's without one) and at the
    # tokenizer's (harness.backends.hf): the tokenizer's is the GGUF's eos, another its end of turn.
    generation = model_dir / "generation_config.json"
    eos = (json.loads(generation.read_text()) if generation.is_file() else config).get("eos_token_id")
    stops = {*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}
    if not stops:
        raise HarnessError(f"{model_dir}: no eos token in its tokenizer, config or generation config")
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else min(stops)
    others = sorted(stops - {eos_id})
    if len(others) > 1:
        raise HarnessError(f"{model_dir}: {len(stops)} end-of-generation ids {sorted(stops)}; a GGUF names two "
                           f"(eos and end of turn); {_GENERAL_TOOL}")
    return {"tokens": tokens, "types": types, "merges": merges, "bos": tokenizer.bos_token_id, "eos": eos_id,
            "eot": others[0] if others else None, "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id,
            "add_bos": add_bos, "add_eos": add_eos,
            "chat_template": _chat_template(tokenizer)}


def _write_gpt2_tokenizer(writer, vocab: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for kind in ("bos", "eos", "eot", "pad", "unk"):
        if vocab[kind] is not None:
            getattr(writer, f"add_{kind}_token_id")(vocab[kind])
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


def _copy_tokenizer_keys(writer, reader, chat_template: str | None) -> None:
    """Every ``tokenizer.*`` key of the reference GGUF, with its value types; string values as their
    raw bytes, so the copy is exact."""
    from gguf import GGUFValueType

    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template" and chat_template:
            continue  # written below, from the directory
        main = field.types[0]
        if main == GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == GGUFValueType.STRING:
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = field.contents()
            writer.add_key_value(key, value, main, sub_type=sub)
        elif main == GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]), main)
        else:
            writer.add_key_value(key, field.contents(), main)
    if chat_template:
        writer.add_chat_template(chat_template)


def _shapes(model_dir: Path) -> list[tuple[Path, str, tuple[int, ...]]]:
    """(file, name, shape) of every tensor of the directory's safetensors files, nothing loaded."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise HarnessError(f"{model_dir}: no *.safetensors weights to export")
    found = []
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            found += [(path, name, tuple(f.get_slice(name).get_shape())) for name in f.keys()]
    return found


def _weights(plan: list[tuple[Path, str]]):
    """(name, float32 numpy array) for each (file, name) of `plan`, in its order, one at a time."""
    from safetensors import safe_open

    handles = {}
    try:
        for path, name in plan:
            if path not in handles:
                handles[path] = safe_open(str(path), framework="pt").__enter__()
            yield name, handles[path].get_tensor(name).float().numpy()
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)


def export_gguf(model_dir: Path, out_file: Path, precision: str = "f32") -> Path:
    """Write `model_dir` (a Llama-architecture HF directory with SmolLM2's tokenizer or a byte-level
    BPE with GPT-2's pre-tokenizer) as a GGUF file at `out_file`, atomically (a temporary file
    beside it, then renamed), and return `out_file`. `precision` is "f32", "f16" or "bf16"
    (one-dimensional tensors stay float32). The tensors are streamed: one is in memory at a time."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, MODEL_ARCH, MODEL_ARCH_NAMES, TensorNameMap
    from gguf.quants import quantize

    from harness.runs import atomic_file

    if precision not in PRECISIONS:
        raise HarnessError(f"GGUF precision {precision!r}: one of {', '.join(PRECISIONS)}")
    started = time.perf_counter()
    model_dir, out_file = Path(model_dir), Path(out_file)
    config = _config(model_dir)
    n_vocab = config["vocab_size"]
    tokenizer = _load_tokenizer(model_dir)
    reader, tokens = _reference_tokenizer()
    vocab = tokenizer.get_vocab()
    if vocab == {token: i for i, token in enumerate(tokens)}:  # SmolLM2's: its keys, copied
        chat_template = _chat_template(tokenizer)
        reference_template = reader.fields["tokenizer.chat_template"].contents() \
            if "tokenizer.chat_template" in reader.fields else None
        if chat_template == reference_template:
            chat_template = None  # the reference's, copied as it is
        if n_vocab != len(tokens):
            raise HarnessError(f"{model_dir}: vocab_size {n_vocab} in config.json but SmolLM2's tokenizer has "
                               f"{len(tokens)} tokens; {_GENERAL_TOOL}")
        write_tokenizer = functools.partial(_copy_tokenizer_keys, reader=reader, chat_template=chat_template)
    elif (why_not := _not_gpt2_bpe(model_dir)) is None:  # a "gpt2" vocabulary, written here
        write_tokenizer = functools.partial(_write_gpt2_tokenizer, vocab=_gpt2_vocab(model_dir, tokenizer, config))
    else:
        raise HarnessError(f"{model_dir}: its tokenizer is neither SmolLM2's ({len(vocab)} tokens, not the same "
                           f"token-to-id map) nor a byte-level BPE with GPT-2's pre-tokenizer ({why_not}); "
                           f"the GGUF exporter supports those two only; {_GENERAL_TOOL}")

    n_embd, n_layer = config["hidden_size"], config["num_hidden_layers"]
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    head_dim = config.get("head_dim") or n_embd // n_head
    if config.get("hidden_act", "silu") != "silu":
        raise HarnessError(f"{model_dir}: hidden_act {config['hidden_act']!r}; llama.cpp's llama uses silu")
    tied = config.get("tie_word_embeddings", False)

    # The plan: which tensors go in under which names and types, before anything is loaded.
    names = TensorNameMap(MODEL_ARCH.LLAMA, n_layer)
    qtype = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
             "bf16": GGMLQuantizationType.BF16}[precision]
    plan = []  # (file, HF name, GGUF name, shape, GGML type)
    for path, hf_name, shape in _shapes(model_dir):
        if hf_name.endswith(_SKIPPED_SUFFIXES) or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise HarnessError(f"{model_dir}: tensor {hf_name!r} has no llama.cpp name; {_GENERAL_TOOL}")
        plan.append((path, hf_name, name, shape, qtype if len(shape) > 1 else GGMLQuantizationType.F32))
    expected = {"token_embd.weight", "output_norm.weight", *(() if tied else ("output.weight",))}
    expected |= {f"blk.{i}.{part}.weight" for i in range(n_layer) for part in
                 ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                  "ffn_down")}
    if missing := sorted(expected - {name for _, _, name, _, _ in plan}):
        raise HarnessError(f"{model_dir}: no weights for {', '.join(missing[:4])}"
                           f"{' ...' if len(missing) > 4 else ''}; not a complete Llama model")

    with atomic_file(out_file) as tmp:
        writer = GGUFWriter(tmp, MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA])
        try:
            writer.add_type("model")
            writer.add_name(str(config.get("_model_name_or_path") or model_dir.name))
            writer.add_context_length(config.get("max_position_embeddings", 2048))
            writer.add_embedding_length(n_embd)
            writer.add_block_count(n_layer)
            writer.add_feed_forward_length(config["intermediate_size"])
            writer.add_head_count(n_head)
            writer.add_head_count_kv(n_head_kv)
            writer.add_rope_freq_base(_rope_theta(config))
            writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
            writer.add_file_type({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                                  "bf16": LlamaFileType.MOSTLY_BF16}[precision])
            writer.add_vocab_size(n_vocab)
            writer.add_rope_dimension_count(head_dim)
            if head_dim != n_embd // n_head:
                writer.add_key_length(head_dim)
                writer.add_value_length(head_dim)
            write_tokenizer(writer)

            width = {GGMLQuantizationType.F32: 4, GGMLQuantizationType.F16: 2, GGMLQuantizationType.BF16: 2}
            for _, _, name, shape, kind in plan:
                writer.add_tensor_info(name, shape, np.float16 if kind == GGMLQuantizationType.F16 else np.float32,
                                       int(np.prod(shape)) * width[kind],
                                       raw_dtype=kind if kind == GGMLQuantizationType.BF16 else None)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for (_, hf_name, _, shape, kind), (_, data) in zip(plan, _weights([(p, n) for p, n, *_ in plan])):
                if hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
                    data = permute(data, n_head, n_head)
                elif hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
                    data = permute(data, n_head, n_head_kv)
                writer.write_tensor_data(np.ascontiguousarray(quantize(data, kind)))
        finally:
            writer.close()
    log.info("exported %s to %s (%s, %.1f MB, %.1f s)", model_dir, out_file, precision,
             out_file.stat().st_size / 1e6, time.perf_counter() - started)
    return out_file


def gguf_for(model_dir: Path, cache_dir: Path, precision: str = "f32") -> Path:
    """The GGUF of `model_dir` in `precision`, exported once into `cache_dir` and named by the
    weights' sha256 (`harness.models.weights_hash`): later calls return the cached file."""
    from harness.models import weights_hash

    if precision not in PRECISIONS:
        raise HarnessError(f"GGUF precision {precision!r}: one of {', '.join(PRECISIONS)}")
    target = Path(cache_dir) / f"{weights_hash(Path(model_dir))}-{precision}.gguf"
    if target.is_file():
        return target
    return export_gguf(Path(model_dir), target, precision)
