"""The GGUF exporter: a policy directory written as a GGUF that llama.cpp loads and that computes
what transformers computes (harness/backends/gguf_export.py)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError

# a system turn of its own, so the template's long default one stays out (short: the tests run on 2 cores)
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12 or 21: which is larger?"}]
# digits, accents, emoji, runs of spaces and newlines: the pre-tokenizer's edge cases
ODD_TEXT = "Price: 1234567 €, naïve café 🤖\n\n   indented\tTAB <|im_start|>user\nhi<|im_end|>"


@pytest.fixture(scope="module")
def llama_cpp():
    """llama-cpp-python; a missing or broken build fails these tests in one line, never skips them."""
    try:
        import llama_cpp
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        return llama_cpp
    pytest.fail(f"llama-cpp-python does not import ({problem}); install it built with "
                "CMAKE_ARGS=-DGGML_NATIVE=OFF", pytrace=False)


@pytest.fixture(scope="module")
def smollm2():
    """(directory, fp32 model, tokenizer) of the embedded model."""
    from harness.models import load

    model, tokenizer, info = load("smollm2-135m")
    return Path(info["path"]), model, tokenizer


@pytest.fixture(scope="module")
def original():
    """The embedded model's own GGUF (Q4_1), as the exporter reads it once a process."""
    from harness.backends.gguf_export import _reference_tokenizer

    return _reference_tokenizer()[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, smollm2):
    """A GGUF cache holding the embedded model's f32 and f16 exports (gguf_for)."""
    from harness.backends.gguf_export import gguf_for

    root = tmp_path_factory.mktemp("gguf")
    for precision in ("f32", "f16"):
        gguf_for(smollm2[0], root, precision)
    return root


def hf_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def llama_logits(llama_cpp, path, ids, kv_cache_f32=True):
    """llama.cpp's logits at every position of `ids`. Its key/value cache is f16 by default, which
    alone moves SmolLM2's logits by up to ~0.04; an f32 cache isolates the export."""
    kv = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if kv_cache_f32 else {}
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=512, verbose=False, n_threads=2, **kv)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def prompt_ids(tokenizer):
    text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    return tokenizer(text + "The larger number is", add_special_tokens=False).input_ids


def compare(llama_cpp, path, model, tokenizer, kv_cache_f32=True):
    """(max |logit difference|, max |log-prob difference|, whether llama.cpp's greedy token is
    transformers' at every position where transformers' top two are 0.5 apart or more)."""
    ids = prompt_ids(tokenizer)
    ours, ref = llama_logits(llama_cpp, path, ids, kv_cache_f32), hf_logits(model, ids)
    assert ours.shape == ref.shape == (len(ids), len(tokenizer))
    top2 = np.sort(ref, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= 0.5
    assert clear.sum() >= len(ids) // 2
    greedy = bool((ours.argmax(-1) == ref.argmax(-1))[clear].all())
    return float(np.abs(ours - ref).max()), float(np.abs(log_softmax(ours) - log_softmax(ref)).max()), greedy


# -- the weights, bit for bit, without llama.cpp --------------------------------------------------
def test_f32_export_restores_the_original_gguf_weights(cache, smollm2, original):
    """smollm2-135m was dequantised from its Q4_1 GGUF through transformers' reverse permutation:
    exported at f32, every tensor (q and k permuted back) equals the dequantised original exactly,
    under the same names, with no output.weight (tied embeddings)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from harness.backends.gguf_export import gguf_for

    original = {t.name: t for t in original.tensors}
    exported = {t.name: t for t in GGUFReader(gguf_for(smollm2[0], cache, "f32")).tensors}
    assert sorted(exported) == sorted(original) and "output.weight" not in exported
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.17.attn_q.weight", "blk.29.attn_k.weight",
                 "blk.5.attn_v.weight", "blk.5.ffn_gate.weight", "token_embd.weight", "output_norm.weight"):
        want = dequantize(original[name].data, original[name].tensor_type)
        np.testing.assert_array_equal(np.asarray(exported[name].data), want, err_msg=name)


def test_metadata_and_tensor_types(cache, smollm2, original):
    from gguf import GGUFReader

    from harness.backends.gguf_export import gguf_for

    f16 = GGUFReader(gguf_for(smollm2[0], cache, "f16"))
    for key, field in original.fields.items():
        if key.startswith(("tokenizer.", "llama.")):
            assert f16.fields[key].contents() == field.contents(), key
    assert f16.fields["general.file_type"].contents() == 1  # MOSTLY_F16
    types = {t.name: t.tensor_type.name for t in f16.tensors}
    assert types["blk.3.attn_norm.weight"] == types["output_norm.weight"] == "F32"
    assert types["token_embd.weight"] == types["blk.3.attn_q.weight"] == types["blk.3.ffn_down.weight"] == "F16"


# -- llama.cpp computes what transformers computes ---------------------------------------------------
def test_llama_cpp_tokenises_like_transformers(llama_cpp, cache, smollm2):
    from harness.backends.gguf_export import gguf_for

    _, _, tokenizer = smollm2
    llm = llama_cpp.Llama(model_path=str(gguf_for(smollm2[0], cache, "f32")), n_ctx=64, verbose=False,
                          n_threads=2, vocab_only=True)
    try:
        chat = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
        for text in (chat, ODD_TEXT):
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == \
                tokenizer(text, add_special_tokens=False).input_ids, text
        assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    finally:
        llm.close()


def test_f32_logits_match_transformers(llama_cpp, cache, smollm2):
    from harness.backends.gguf_export import gguf_for

    path, model, tokenizer = smollm2
    logit_diff, logprob_diff, greedy = compare(llama_cpp, gguf_for(path, cache, "f32"), model, tokenizer)
    # measured: 8e-5 (logits reach 38 in magnitude); without the q/k permutation: 36
    assert logit_diff < 1e-3 and logprob_diff < 1e-3, (logit_diff, logprob_diff)
    assert greedy


@pytest.mark.parametrize(("precision", "tolerance"), [("f16", 0.3), ("bf16", 1.0)])
def test_half_precision_logits_match_transformers_loosely(llama_cpp, cache, smollm2, precision, tolerance):
    """f16 and bf16 weights served as llama_cpp.server would (its default f16 key/value cache)."""
    from harness.backends.gguf_export import gguf_for

    path, model, tokenizer = smollm2
    logit_diff, logprob_diff, greedy = compare(llama_cpp, gguf_for(path, cache, precision), model, tokenizer,
                                               kv_cache_f32=False)
    # measured: f16 0.06 logits, 0.06 log-probs; bf16 0.3 and 0.3 (logits reach 38 in magnitude)
    assert logit_diff < tolerance and logprob_diff < tolerance, (logit_diff, logprob_diff)
    assert greedy


def test_untied_grouped_query_model_with_its_own_chat_template(llama_cpp, smollm2, tmp_path):
    """A small random Llama with a separate lm_head (output.weight), 4 query heads on 2 key/value
    heads, a head_dim that is not hidden/heads, SmolLM2's tokenizer and another chat template:
    llama.cpp's logits equal transformers' and the directory's template wins."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from harness.backends.gguf_export import export_gguf

    source, _, tokenizer = smollm2
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.1,  # logits of a few units
                         bos_token_id=1, eos_token_id=2)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 5000.0}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # norms away from 1, so a mix-up of norm weights shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path / "policy")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, tmp_path / "policy" / name)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" \
               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    (tmp_path / "policy" / "chat_template.jinja").write_text(template)

    out = export_gguf(tmp_path / "policy", tmp_path / "out" / "policy.gguf")
    from gguf import GGUFReader

    reader = GGUFReader(out)
    assert "output.weight" in {t.name for t in reader.tensors}
    assert reader.fields["tokenizer.chat_template"].contents() == template
    assert reader.fields["llama.attention.key_length"].contents() == 32

    ids = tokenizer("The quick brown fox jumps over the lazy dog, 3 times.", add_special_tokens=False).input_ids
    ours = llama_logits(llama_cpp, out, ids)
    ref = hf_logits(model, ids)
    diff = float(np.abs(ours - ref).max())
    assert diff < 1e-4 * max(1.0, float(np.abs(ref).max())), diff
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


# -- the tiny test models: a byte-level BPE of their own (a "gpt2" vocabulary) -----------------------
# where llama.cpp's pre-tokenizers differ: digits (alone or in runs), newlines before digits, runs of
# spaces, contractions, punctuation runs, accents and other scripts
TINY_TEXTS = (ODD_TEXT, "hi\n1 and\n\n2,  3   \n  x", "Year 1987: 42 apples, 3.14159; 1,000.50$ (approx.)",
              "Don't you'll we're I'M He'd", "ÆØÅ ñ ü ß Ωμέγα 中文 ... !!! ?? [yes] {no} <A>Paris</A>",
              "  leading and trailing  ", "x" * 200)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """tiny-fitted exported at f32 (gguf_for)."""
    from harness.backends.gguf_export import gguf_for
    from harness.models import resolve

    return gguf_for(resolve("tiny-fitted"), tmp_path_factory.mktemp("tiny-gguf"), "f32")


def fixture_prompts(per_task=3):
    """The first agent's opening messages on the first test-split fixture questions of a debate task
    and two information-exchange ones."""
    from harness.mas.dialogue import start
    from harness.tasks import get_task

    prompts = []
    for name in ("arc_c", "hotpotqa", "triviaqa"):
        task = get_task(name)
        prompts += [d.messages(0) for d in start(task.load("test", limit=per_task), task.setting)]
    return prompts


def test_tiny_model_tokenises_like_transformers(llama_cpp, tiny_gguf, tiny_fitted):
    """Dialogue prompts rendered in ChatML and odd texts: the same ids (special tokens parsed), the
    same text back. A wrong pre-tokenizer ("default", "smollm", "llama-bpe", "qwen2") fails the digit
    and newline texts."""
    from gguf import GGUFReader

    tokenizer = tiny_fitted.tokenizer
    fields = GGUFReader(tiny_gguf).fields
    assert (fields["tokenizer.ggml.model"].contents(), fields["tokenizer.ggml.pre"].contents()) == ("gpt2", "gpt-2")
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert fields["tokenizer.ggml.token_type"].contents()[:4] == [3, 3, 3, 1]  # the 3 special tokens: CONTROL
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=64, verbose=False, n_threads=2, vocab_only=True)
    try:
        chats = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in fixture_prompts()]
        for text in (*chats, *TINY_TEXTS):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, text
            assert llm.detokenize(ids).decode() == tokenizer.decode(ids, skip_special_tokens=True), text
        assert llm.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    finally:
        llm.close()


def test_tiny_model_logits_and_greedy_answers_match_transformers(llama_cpp, tiny_gguf, tiny_fitted):
    """f32 logits on a dialogue prompt (f32 key/value cache) as transformers'; greedy chat
    completions as the harness's HF engine's, word for word, ending where it ends its turn."""
    from harness.backends.base import Request, Sampling

    prompts = fixture_prompts()
    ids = tiny_fitted.encode(prompts[3])
    ours, ref = llama_logits(llama_cpp, tiny_gguf, ids), hf_logits(tiny_fitted.model, ids)
    diff = float(np.abs(ours - ref).max())
    assert diff < 1e-3, diff  # measured: 6e-5 on this 428-token prompt (logits reach 20)
    assert (ours.argmax(-1) == ref.argmax(-1)).all()

    want = tiny_fitted.generate([Request(m) for m in prompts], Sampling(32))
    assert "stop" in {c.finish_reason for c in want}  # measured: 8 of the 9 end their turn, 1 runs to 32 tokens
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=1024, verbose=False, n_threads=2,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        for messages, completion in zip(prompts, want):
            got = llm.create_chat_completion(messages, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                                             repeat_penalty=1.0, max_tokens=32)
            assert got["usage"]["prompt_tokens"] == completion.prompt_tokens
            assert (got["choices"][0]["message"]["content"], got["choices"][0]["finish_reason"]) == \
                (completion.text, completion.finish_reason)
    finally:
        llm.close()


def byte_level_policy(root: Path, pre_tokenizer, model="bpe") -> Path:
    """A small random Llama (vocab_size 320, more than the tokenizer's ids) with a tokenizer trained
    here: a BPE with `pre_tokenizer`, 3 special tokens and one plain added token, or a WordPiece."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = ["Alice and Bob count 12, 345 and 6789 apples.\nDon't they?  Yes: café, naïve!"] * 4
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if model == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoders.ByteLevel()
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                            show_progress=False))
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizer
        tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", *special],
                                                                  show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.add_tokens(["<answer>"])  # not special: USER_DEFINED
    config = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def test_another_byte_level_bpe_with_padding_and_a_plain_added_token(llama_cpp, tmp_path):
    """Ids past the tokenizer's up to vocab_size become unused [PAD<id>] tokens, as in
    convert_hf_to_gguf.py; a plain added token is matched in the text, special tokens or not."""
    from gguf import GGUFReader
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    from harness.backends.gguf_export import export_gguf

    policy = byte_level_policy(tmp_path / "policy", pre_tokenizers.ByteLevel(add_prefix_space=False))
    tokenizer = AutoTokenizer.from_pretrained(policy)
    out = export_gguf(policy, tmp_path / "policy.gguf")
    fields = GGUFReader(out).fields
    tokens, types = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == 320 and tokens[-1] == "[PAD319]" and types[-1] == 5  # UNUSED
    assert types[tokenizer.convert_tokens_to_ids("<answer>")] == 4  # USER_DEFINED
    assert "tokenizer.chat_template" not in fields  # none in the directory
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, verbose=False, n_threads=2, vocab_only=True)
    try:
        for text in ("Bob: <answer>6789</answer> <|im_end|>", *TINY_TEXTS):
            for special in (True, False):
                want = tokenizer(text, add_special_tokens=False, split_special_tokens=not special).input_ids
                assert llm.tokenize(text.encode(), add_bos=False, special=special) == want, (text, special)
    finally:
        llm.close()


# -- refusals, caching, atomic writes ------------------------------------------------------------
@pytest.mark.parametrize(("kind", "reason"), [("wordpiece", "its model is WordPiece, not BPE"),
                                              ("no-regex", "does not split with GPT-2's regex"),
                                              ("prefix-space", "adds a prefix space")])
def test_another_tokenizer_is_refused_in_one_line(tmp_path, kind, reason):
    """Neither SmolLM2's tokenizer nor a byte-level BPE that llama.cpp's "gpt-2" pre-tokenizer splits
    as transformers does: refused before anything is written."""
    from tokenizers import pre_tokenizers

    from harness.backends.gguf_export import export_gguf

    pre = {"wordpiece": pre_tokenizers.Whitespace(),
           "no-regex": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
           "prefix-space": pre_tokenizers.ByteLevel(add_prefix_space=True)}[kind]
    policy = byte_level_policy(tmp_path / "policy", pre, model="wordpiece" if kind == "wordpiece" else "bpe")
    with pytest.raises(HarnessError) as err:
        export_gguf(policy, tmp_path / "out" / "policy.gguf")
    message = str(err.value)
    assert "\n" not in message and reason in message and "convert_hf_to_gguf.py" in message, message
    assert not (tmp_path / "out").exists()


def test_unknown_precision_is_refused(smollm2, tmp_path):
    from harness.backends.gguf_export import export_gguf, gguf_for

    for call in (export_gguf, gguf_for):
        with pytest.raises(HarnessError, match="one of f32, f16, bf16"):
            call(smollm2[0], tmp_path / "x", "q4_0")


def test_gguf_for_exports_once_per_weights_and_precision(cache, smollm2, monkeypatch):
    from harness.backends import gguf_export
    from harness.models import weights_hash

    path = smollm2[0]
    f32 = gguf_export.gguf_for(path, cache, "f32")
    f16 = gguf_export.gguf_for(path, cache, "f16")
    assert f32 != f16 and f32.name == f"{weights_hash(path)}-f32.gguf"
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    stamps = {p: p.stat().st_mtime_ns for p in (f32, f16)}

    def no_export(*args, **kwargs):
        raise AssertionError("gguf_for exported again")

    monkeypatch.setattr(gguf_export, "export_gguf", no_export)
    assert gguf_export.gguf_for(path, cache, "f32") == f32 and gguf_export.gguf_for(path, cache, "f16") == f16
    assert {p: p.stat().st_mtime_ns for p in (f32, f16)} == stamps
    assert {f32.name, f16.name} <= {p.name for p in cache.iterdir()}
    assert not [p.name for p in cache.iterdir() if not p.name.endswith(".gguf")]  # no temporaries left


def test_a_failed_export_leaves_nothing(smollm2, tmp_path, monkeypatch):
    from harness.backends import gguf_export

    real = gguf_export._weights

    def broken(plan):
        for i, item in enumerate(real(plan)):
            if i == 3:
                raise OSError("disk on fire")
            yield item

    monkeypatch.setattr(gguf_export, "_weights", broken)
    (tmp_path / "old.gguf").write_text("previous")
    with pytest.raises(HarnessError, match=r"old.gguf: cannot write it \(disk on fire\)"):
        gguf_export.export_gguf(smollm2[0], tmp_path / "old.gguf")
    assert [p.name for p in tmp_path.iterdir()] == ["old.gguf"] and (tmp_path / "old.gguf").read_text() == "previous"
