"""Table-driven metric tests (cases in metric_cases.json), plus an lm-eval agreement check."""

import json
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.tasks.metrics import (
    LMEVAL_EXACT_MATCH_KWARGS,
    METRICS,
    Metric,
    exact_match,
    normalize_answer,
    optima_f1,
    score,
)

CASES = json.loads((Path(__file__).parent / "metric_cases.json").read_text())
TOL = 1e-9


def case_id(case):
    return f"{case['metric']}:{case['prediction']!r}->{case['golds']!r}"


@pytest.fixture(scope="module")
def tokenizer():
    # A tiny byte-level BPE trained here, so no hub download; common words become whole tokens.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet)
    sentences = ["the cat sat on the mat", "the dog ran to the park", "madam ada", "answer is 42"]
    tok.train_from_iterator(sentences * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(case, tokenizer):
    got = score(
        case["metric"],
        case["prediction"],
        case["golds"],
        options=case.get("options"),
        tokenizer=tokenizer,
    )
    assert got == pytest.approx(case["expected"], abs=1e-6), case["note"]


def test_table_covers_every_metric():
    assert {c["metric"] for c in CASES} == set(METRICS.names())


EM_CASES = [c for c in CASES if c["metric"] == "em"]


def lm_eval_em(prediction, gold):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    out = exact_match_hf_evaluate([prediction], [gold], **LMEVAL_EXACT_MATCH_KWARGS)
    return float(out["exact_match"])


@pytest.mark.parametrize("case", EM_CASES, ids=case_id)
def test_exact_match_agrees_with_lm_eval(case):
    if "lmeval_skip" in case:
        pytest.skip(case["lmeval_skip"])
    theirs = max(lm_eval_em(case["prediction"], g) for g in case["golds"])
    ours = max(exact_match(case["prediction"], g) for g in case["golds"])
    assert ours == theirs == case["expected"], case["note"]


def test_lm_eval_disagreement_is_only_the_documented_one():
    # Guards the skip above: the newline case really does differ in lm-eval, and only that one.
    differ = [
        c["prediction"]
        for c in EM_CASES
        for g in c["golds"]
        if lm_eval_em(c["prediction"], g) != exact_match(c["prediction"], g)
    ]
    assert differ == [c["prediction"] for c in EM_CASES if "lmeval_skip" in c]


def test_normalize_answer():
    assert normalize_answer("  The  Quick, brown fox!\t") == "quick brown fox"
    assert normalize_answer("An ant ate a banana") == "ant ate banana"


def test_optima_partial_overlap_from_tokens(tokenizer):
    pred, gold = "the cat sat", "the cat ran on the mat"
    # Byte-level BPE marks a leading space, so the second "the" is a different token ("Ġthe").
    assert tokenizer.tokenize(pred) == ["the", "Ġcat", "Ġsat"]
    assert tokenizer.tokenize(gold) == ["the", "Ġcat", "Ġran", "Ġon", "Ġthe", "Ġmat"]
    precision, recall = 2 / 3, 2 / 6  # common: "the", "Ġcat"
    expected = 2 * precision * recall / (precision + recall)
    assert optima_f1(pred, gold, tokenizer) == pytest.approx(expected, abs=TOL)
    assert expected == pytest.approx(0.4444444444, abs=1e-9)


def test_optima_strip_is_a_character_set(tokenizer):
    assert optima_f1("madam", "ada", tokenizer) == 1.0
    assert optima_f1("=m=42m", "42", tokenizer) == 1.0
    # The tokens differ, so the 1.0 comes from the strip.
    assert tokenizer.tokenize("madam") != tokenizer.tokenize("ada")


def test_registry_entries():
    assert METRICS.names() == ["f1", "em", "accuracy", "optima_f1"]
    acc, opt = METRICS.get("accuracy"), METRICS.get("optima_f1")
    assert isinstance(acc, Metric) and acc.needs_options and not acc.needs_tokenizer
    assert opt.needs_tokenizer and not opt.needs_options
    assert all(METRICS.get(n).higher_is_better for n in METRICS.names())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: score("optima_f1", "a", ["a"]), "needs a tokenizer"),
        (lambda: score("accuracy", "A", ["x"]), "needs the answer options"),
        (lambda: score("f1", "a", []), "no gold answers"),
        (lambda: score("f1", "a", "a"), "must be a list"),
        (lambda: score("f2", "a", ["a"]), "unknown metric 'f2'; did you mean: f1"),
    ],
)
def test_score_errors(call, message):
    with pytest.raises(HarnessError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
