"""The hf backend on the tiny models: the key/value cache and lookahead guesses must change nothing but speed."""

from dataclasses import replace

import pytest
import torch

from harness.backends import Request, Sampling
from harness.backends.decoding import pick
from harness.mas.dialogue import CLOSING, DialogueConfig, run_dialogues, start
from harness.tasks import get_task


def _dialogue_texts(backend, questions, setting, **cfg):
    ds = run_dialogues(start(questions, setting), backend, DialogueConfig(max_new_tokens=12, **cfg), seed=3)
    return [[u.text for u in d.utterances] for d in ds]


def test_kv_cache_gives_the_same_dialogues_and_reuses_prompt_tokens(tiny_random):
    task = get_task("hotpotqa")
    qs = task.load("test", limit=4)
    before = tiny_random.usage.cached_tokens
    tiny_random.kv_cache = True
    cached = _dialogue_texts(tiny_random, qs, task.setting, max_turns=4)
    reused = tiny_random.usage.cached_tokens - before
    tiny_random.kv_cache = False
    try:
        fresh = _dialogue_texts(tiny_random, qs, task.setting, max_turns=4)
    finally:
        tiny_random.kv_cache = True
    assert cached == fresh
    assert reused > 0
    assert not tiny_random._slots  # finished dialogues release their slots


@pytest.mark.parametrize("model", ["tiny_random", "tiny_fitted"])
def test_lookahead_decodes_what_one_token_a_step_does(model, request):
    backend = request.getfixturevalue(model)
    task = get_task("hotpotqa")
    qs = task.load("test", limit=4)
    plain = _dialogue_texts(backend, qs, task.setting, max_turns=4)
    before = backend.usage.guessed_tokens
    guessed = _dialogue_texts(backend, qs, task.setting, max_turns=4, lookahead=6)
    assert guessed == plain
    assert backend.usage.guessed_tokens > before  # guesses were taken, so the comparison means something
    req = [Request([{"role": "user", "content": "Say something, and say it again."}])]
    full = backend.generate(req, Sampling(max_new_tokens=20))[0]
    stop = full.text[4:7]
    for s in (Sampling(max_new_tokens=20, lookahead=4), Sampling(max_new_tokens=20, lookahead=4, stop=(stop,))):
        assert backend.generate(req, s)[0].text == backend.generate(req, replace(s, lookahead=0))[0].text


def test_sampled_generation_is_seeded(tiny_random):
    req = [Request([{"role": "user", "content": "Tell me about the river."}])] * 3
    s = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=10)
    a = [c.text for c in tiny_random.generate(req, s, seed=1)]
    b = [c.text for c in tiny_random.generate(req, s, seed=1)]
    c = [c.text for c in tiny_random.generate(req, s, seed=2)]
    assert a == b and a != c


@pytest.mark.parametrize("top_p, expected", [(1.0, [0.5, 0.0, 0.3, 0.2]), (0.75, [0.625, 0.0, 0.375, 0.0])])
def test_a_draw_follows_the_nucleus_distribution_and_never_picks_an_impossible_token(top_p, expected):
    rows = 8000
    logits = torch.tensor([0.5, 0.0, 0.3, 0.2]).log().expand(rows, 4)
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]
    picked = pick(logits, Sampling(8, temperature=1.0, top_p=top_p), generators)
    share = torch.bincount(picked, minlength=4) / rows
    assert share.tolist() == pytest.approx(expected, abs=0.02)  # 4 standard errors at 8000 draws
    assert share[1] == 0


def test_a_sampled_requests_text_depends_on_its_seed_not_on_its_batch(tiny_random):
    prompts = [[{"role": "user", "content": t}] for t in ("Tell me about the river.", "Name a colour.", "Why?")]
    s = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=10)
    together = tiny_random.generate([Request(p, seed=7 + i) for i, p in enumerate(prompts)], s, seed=1)
    alone = [tiny_random.generate([Request(p, seed=7 + i)], s, seed=2)[0] for i, p in enumerate(prompts)]
    assert [c.text for c in together] == [c.text for c in alone]
    # Requests without a seed of their own draw from the call's seed and their place in the call,
    # however the backend splits the call into batches.
    unseeded = [Request(p) for p in prompts]
    batch_size = tiny_random.batch_size
    try:
        tiny_random.batch_size = 1
        one_by_one = [c.text for c in tiny_random.generate(unseeded, s, seed=1)]
    finally:
        tiny_random.batch_size = batch_size
    assert [c.text for c in tiny_random.generate(unseeded, s, seed=1)] == one_by_one


def test_make_backend_builds_the_configured_engine_from_a_config():
    import dataclasses

    from harness.backends import make_backend
    from harness.backends.hf import HFBackend
    from harness.config import EvalConfig
    from harness.errors import HarnessError

    cfg = EvalConfig(model="tiny-random", batch_size=3, kv_cache=False)
    backend = make_backend(cfg)
    assert isinstance(backend, HFBackend) and backend.batch_size == 3 and not backend.kv_cache
    assert backend.model_info["name"] == "tiny-random" and backend.tokenizer is not None
    assert make_backend(None, model="tiny-random", batch_size=5).batch_size == 5  # no config: the lm-eval bridge
    with pytest.raises(HarnessError, match="unknown backend 'vllm'"):
        make_backend(dataclasses.replace(cfg, backend="vllm"))


def test_batched_equals_one_at_a_time_and_counts_tokens(tiny_random):
    prompts = [[{"role": "user", "content": t}] for t in ("a short one", "a much longer prompt " * 5)]
    s = Sampling(max_new_tokens=8)
    batched = tiny_random.generate([Request(p) for p in prompts], s)
    single = [tiny_random.generate([Request(p)], s)[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]
    for c, p in zip(batched, prompts):
        assert c.prompt_tokens == len(tiny_random.encode(p))
        assert c.completion_tokens <= 8 and c.finish_reason in ("stop", "length")


def test_stop_strings_end_generation_before_the_stop(tiny_random):
    req = [Request([{"role": "user", "content": "Say something."}])]
    full = tiny_random.generate(req, Sampling(max_new_tokens=20))[0]
    assert len(full.text) > 2
    stop = full.text[1:3]
    cut = tiny_random.generate(req, Sampling(max_new_tokens=20, stop=(stop,)))[0]
    assert stop not in cut.text and full.text.startswith(cut.text)


def test_logprobs_match_a_direct_forward(tiny_random):
    texts = ["the fox ran", "a much longer text about the river and the town"]
    lps = tiny_random.logprobs(texts)
    ids = tiny_random.tokenizer(texts[0], add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = tiny_random.model(ids).logits[0, :-1]
    expected = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    assert len(lps[0]) == ids.shape[1] - 1
    assert torch.allclose(torch.tensor(lps[0]), expected, atol=1e-4)
    assert len(lps[1]) > len(lps[0]) and all(lp <= 0 for lp in lps[1])


def test_turn_nll_scores_the_content_of_one_assistant_turn(tiny_random):
    texts = ["Alice: the fox ran <A>fox</A>", "", "Bob: a much longer reply about the river and the town"]
    nlls = tiny_random.turn_nll(texts)
    tok = tiny_random.tokenizer
    for text, nll in zip(texts, nlls):
        rendered = tok.apply_chat_template([{"role": "assistant", "content": text}], tokenize=False)
        head = rendered[:rendered.index("assistant\n") + len("assistant\n")]
        head_ids = tok(head, add_special_tokens=False).input_ids
        ids = head_ids + tok(rendered[len(head):], add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = tiny_random.model(torch.tensor([ids])).logits[0, :-1]
        lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
        assert nll == pytest.approx(-lp[len(head_ids) - 1:].mean().item(), abs=1e-4)  # batched = alone
    assert nlls[2] != nlls[0] and all(n > 0 for n in nlls)


def test_decode_cache_layer_appends_in_place_and_grows_past_its_room():
    import torch

    from harness.backends.kv_cache import RoomyLayer

    full = torch.randn(2, 3, 9, 4)
    buf = torch.zeros(2, 3, 5, 4)
    buf[:, :, :3] = full[:, :, :3]
    layer = RoomyLayer(buf, buf.clone(), 3)
    for start, stop in ((3, 5), (5, 6), (6, 9)):  # the second step fills the room, the third grows it
        keys, _ = layer.update(full[:, :, start:stop], full[:, :, start:stop])
        assert torch.equal(keys, full[:, :, :stop]) and layer.get_seq_length() == stop
    assert layer.get_mask_sizes(1) == (10, 0)
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, full[1:, :, :9])


def test_rows_naming_adapters_decode_as_each_adapter_would_alone():
    from peft import LoraConfig, get_peft_model

    from harness import models
    from harness.backends.hf import HFBackend

    model, tokenizer, info = models.load("tiny-random")
    torch.manual_seed(0)  # random A and B, so that the two adapters answer differently
    lora = LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    peft = get_peft_model(model, lora)
    peft.add_adapter("other", lora)
    peft.eval()
    backend = HFBackend(loaded=(peft, tokenizer, info))
    questions = [[{"role": "user", "content": q}] for q in ("Where does the river start?", "Name a colour.")]
    s = Sampling(max_new_tokens=12)
    mixed = backend.generate([Request(m, adapter=a) for m in questions for a in ("default", "other")],
                             replace(s, lookahead=4))
    alone = {}
    for a in ("default", "other"):
        peft.set_adapter(a)
        alone[a] = [c.text for c in backend.generate([Request(m) for m in questions], s)]
    assert alone["default"] != alone["other"]
    assert [c.text for c in mixed] == [alone[a][i] for i in range(2) for a in ("default", "other")]
    with pytest.raises(ValueError, match="some requests only"):
        backend.generate([Request(questions[0], adapter="other"), Request(questions[1])], s)


def test_a_slot_started_from_keys_and_values_computed_elsewhere_is_reused(tiny_random):
    messages = [{"role": "user", "content": "Where does the river start?"}]
    fresh = tiny_random.generate([Request(messages, cache_key="fresh/0")], Sampling(max_new_tokens=12))[0]
    ids = tiny_random.encode(messages)
    with torch.no_grad():
        past = tiny_random.model(input_ids=torch.tensor([ids]), use_cache=True).cache
    tiny_random.keep("kept/0", ids, [(layer.keys, layer.values) for layer in past.layers])
    kept = tiny_random.generate([Request(messages, cache_key="kept/0")], Sampling(max_new_tokens=12))[0]
    tiny_random.release("fresh/")
    tiny_random.release("kept/")
    assert kept.text == fresh.text and fresh.cached_tokens == 0 and kept.cached_tokens == len(ids) - 1
    assert tiny_random.model.config._attn_implementation == "sdpa"  # generation's grouped attention undone


@pytest.mark.parametrize("rows,queries,keys", [(1, 1, 7), (2, 5, 12), (3, 9, 40)])
def test_grouped_sdpa_is_transformers_sdpa_without_copied_heads(rows, queries, keys):
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from harness.backends.attention import grouped_sdpa

    torch.manual_seed(rows + queries)
    query = torch.randn(rows, 6, queries, 8)
    key, value = torch.randn(2, rows, 3, keys, 8).unbind(0)  # 3 key/value heads for 6 query heads
    mask = torch.ones(rows, 1, queries, keys, dtype=torch.bool).tril(keys - queries)
    mask[0, :, :, :2] = False  # the first row left-padded
    module = SimpleNamespace(num_key_value_groups=2, is_causal=True)
    for m in (mask, None):
        out, _ = grouped_sdpa(module, query, key, value, m, scaling=0.3)
        expected, _ = sdpa_attention_forward(module, query, key, value, m, scaling=0.3)
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("cached,new", [(0, 1), (0, 9), (6, 1), (6, 9), (40, 33)])
def test_causal_after_cache_attention_is_lower_right_causal(cached, new):
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import repeat_kv

    from harness.backends.attention import causal_after_cache

    torch.manual_seed(cached + new)
    query = torch.randn(1, 6, new, 8)
    key, value = torch.randn(2, 1, 3, cached + new, 8).unbind(0)  # 3 key/value heads for 6 query heads
    out, _ = causal_after_cache(SimpleNamespace(num_key_value_groups=2), query, key, value, None, scaling=0.3)
    mask = torch.ones(new, cached + new, dtype=torch.bool).tril(cached)  # query i sees keys up to cached + i
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, repeat_kv(key, 2), repeat_kv(value, 2), attn_mask=mask, scale=0.3).transpose(1, 2)
    assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-6)


def test_a_model_on_causal_after_cache_attention_continues_a_cache_as_one_pass_would():
    from transformers import DynamicCache

    from harness import models
    from harness.backends.attention import CAUSAL_AFTER_CACHE

    model = models.load("tiny-random")[0].eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(input_ids=ids).logits
        model.set_attn_implementation(CAUSAL_AFTER_CACHE)
        past = model(input_ids=ids[:, :12], use_cache=True).cache
        rest = model(input_ids=ids[:, 12:], position_ids=torch.arange(12, 30)[None],
                     cache=DynamicCache([(layer.keys, layer.values) for layer in past.layers])).logits
        with pytest.raises(ValueError, match="no attention mask"):
            model(input_ids=ids, attention_mask=torch.ones_like(ids)[None, None].expand(1, 1, 30, 30).bool())
    assert torch.allclose(rest, whole[:, 12:], atol=1e-5)


def test_closing_turn_asks_capped_dialogues_without_an_answer_for_one(tiny_random):
    task = get_task("hotpotqa")
    qs = task.load("test", limit=4)
    plain = run_dialogues(start(qs, task.setting), tiny_random, DialogueConfig(max_turns=2, max_new_tokens=8), seed=3)
    closed = run_dialogues(start(qs, task.setting), tiny_random,
                           DialogueConfig(max_turns=2, max_new_tokens=8, closing_turn=True), seed=3)
    assert all(not d.final_answer for d in plain)  # tiny-random never answers: every dialogue closes
    for before, after in zip(plain, closed):
        assert [u.text for u in after.utterances[:2]] == [u.text for u in before.utterances]
        last = after.utterances[-1]
        assert len(after.utterances) == 3 and last.closing and last.speaker == "Alice"
        assert after.stop == "turn_cap" and not after.closing
        assert after.messages(0)[-2]["content"].endswith(CLOSING)  # the memory it answered from
