"""Micro-benchmarks of the harness's hot paths, each on its own code: a decode step, a prefill, a
`loglikelihood` batch, an influence unit step (reference and fast path) and the fast path's draft
check of one dialogue. Sizes and the model: `conftest.MODELS`; how to run and compare them:
docs/benchmarks.md, "Micro-benchmarks"."""

import pytest
import torch

ROUNDS = 5


def story_ids(backend, n: int) -> list[int]:
    """`n` token ids of CBT story text (the train split's contexts, repeated as needed)."""
    from harness.tasks import get_task

    text = " ".join(" ".join(c) for q in get_task("cbt").load("train")[:4] for c in q.contexts)
    ids = backend.tokenizer(text, add_special_tokens=False).input_ids
    return (ids * (n // len(ids) + 1))[:n]


def test_decode_step(benchmark, backend, sizes):
    """One decoding forward pass of [B, 1] tokens on a key/value cache of L columns a row, in the
    engine's growable cache (`padded_cache`) and grouped attention, as `HFBackend._decode` steps."""
    from harness.backends.attention import grouped_attention
    from harness.backends.kv_cache import padded_cache

    rows, length, device = sizes["batch"], sizes["cache_length"], backend.device
    ids = story_ids(backend, length + 1)
    with torch.inference_mode(), grouped_attention(backend.model):
        slot = backend._prefill(ids, None, 0)  # the keys/values of ids[:length]
        step = {"input_ids": torch.tensor([[ids[-1]]] * rows, device=device),
                "attention_mask": torch.ones(rows, length + 1, dtype=torch.long, device=device),
                "position_ids": torch.full((rows, 1), length, device=device), "use_cache": True}

        def fresh_cache():  # each round steps from L columns (untimed)
            return (padded_cache([slot] * rows, [length] * rows, length, 1, backend.model.config),), {}

        benchmark.extra_info |= {"rows": rows, "cache_length": length}
        benchmark.pedantic(lambda cache: backend.model(cache=cache, **step), setup=fresh_cache,
                           rounds=4 * ROUNDS, warmup_rounds=1)


def test_prefill(benchmark, backend, sizes):
    """Encoding a [1, L] prompt into a cache slot, as every new conversation does (`_prefill`)."""
    ids = story_ids(backend, sizes["prompt_length"] + 1)
    benchmark.extra_info["prompt_length"] = sizes["prompt_length"]
    with torch.inference_mode():
        slot = benchmark.pedantic(backend._prefill, args=(ids, None, 0), rounds=ROUNDS, warmup_rounds=1)
    assert len(slot.ids) == sizes["prompt_length"]


def test_loglikelihood_batch(benchmark, backend, sizes):
    """`HFBackend.loglikelihood` of one choice: a fresh context of ~C tokens, K options scored
    together (a CBT item in answer_mode=choice without a cache slot)."""
    from harness.backends.base import Choice
    from harness.tasks import get_task

    question = get_task("cbt").load("train")[0]
    context = backend.tokenizer.decode(story_ids(backend, sizes["context_length"]))
    choice = Choice([{"role": "user", "content": context}], tuple(f" {o}" for o in question.options[:sizes["options"]]))
    benchmark.extra_info |= {"context_length": sizes["context_length"], "options": len(choice.continuations)}
    scored = benchmark.pedantic(backend.loglikelihood, args=([choice],), rounds=ROUNDS, warmup_rounds=1)
    assert len(scored[0]) == len(choice.continuations)


@pytest.fixture(scope="session")
def reference_path(pairs, select_config):
    from harness.dits.influence import ReferencePath, prepare

    return ReferencePath(pairs, select_config, *prepare(pairs, select_config))


@pytest.mark.parametrize("path", ["reference_path", "fast_path"])
def test_influence_unit_step(benchmark, request, path, pairs, select_config):
    """A unit's one DPO step from theta* (`step_from`: the adapter restored, a fresh optimizer's
    step on the unit's pairs): padded chosen/rejected rows on the reference path, each prompt
    encoded once for both responses on the fast path."""
    estimator = request.getfixturevalue(path)
    theta_star = estimator.warm_up()  # no warm-up step here: the fresh adapter
    unit = list(range(len(pairs)))
    benchmark.extra_info |= {"pairs": len(unit), "prompt_tokens": sum(len(e.prompt) for e in estimator.encoded)}
    benchmark.pedantic(estimator.step_from, args=(theta_star, unit, select_config.influence.eta),
                       rounds=ROUNDS, warmup_rounds=1)
    estimator.restore(theta_star)


def test_fast_path_check(benchmark, fast_path):
    """The fast path's check of one validation dialogue against theta*'s draft (`divergence`: one
    forward pass per agent's chain of turns on the checker's merged weights, after each agent's
    opening encoded once a unit). On theta* itself the draft holds, so every turn is checked."""
    _, resumed = fast_path.check_drafts()  # merges the weights into the checker and encodes the openings
    assert not resumed
    turns = fast_path.draft_turns[0]
    benchmark.extra_info |= {"turns": len(turns), "checked_positions": sum(len(t.positions()) for t in turns),
                             "opening_tokens": sum(map(len, fast_path.openings))}
    first, _ = benchmark.pedantic(fast_path.divergence, args=(turns,), rounds=ROUNDS, warmup_rounds=1)
    assert first is None
