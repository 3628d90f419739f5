"""Answer-scoring metrics: SQuAD F1 / EM, multiple-choice accuracy, and Optima's tokenizer F1.

Every metric scores one prediction against one gold string; `score` takes a list of gold aliases
and returns the best match, the way SQuAD scores against several annotators.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from harness.errors import HarnessError
from harness.registry import Registry

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    # Same order as the SQuAD v1.1 script (lower, punctuation, articles, whitespace): punctuation
    # goes before articles, so "the-cat" becomes "thecat" and keeps its "the".
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _bag_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        # An answer that normalises away entirely (e.g. "The.") only matches an equally empty gold.
        return float(pred == ref)
    return _bag_f1(pred, ref)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


# lm-eval's `exact_match` deletes regex matches *before* lower-casing and stripping punctuation,
# and can only delete, never collapse. So we strip punctuation ourselves first (otherwise "(the)"
# would keep its article), then articles case-insensitively, then surplus whitespace: leading,
# trailing, and every whitespace char that is followed by another. One gap remains by
# construction: a run is left as its last char, so "new\nyork" != "new york" there but not in
# `exact_match`.
LMEVAL_EXACT_MATCH_KWARGS: dict = {
    "ignore_case": True,
    "ignore_punctuation": True,
    "regexes_to_ignore": [
        "[" + re.escape(string.punctuation) + "]",
        r"(?i)\b(?:a|an|the)\b",
        r"^\s+|\s+$|\s(?=\s)",
    ],
}


# --- multiple choice ---------------------------------------------------------------------------

# "C.", "C)", "(C)", "C: anything": a letter at the start closed by punctuation. A letter followed
# by punctuation is never the article, so lower case is fine here.
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Za-z])\s*[.:)]")
# "answer is C", "answer: (c)", "Option C". A lower-case "a" followed by more words ("the answer
# is a cat") is the article, hence the lookahead; "answer" beats "option" when both appear, and
# the last mention wins ("option A is wrong, the answer is C").
_KEYWORD_LETTER = [
    re.compile(r"(?i:\banswer\s*(?:is\s*:?|:))\s*\(?([A-Za-z])\b(?!(?<=a)\s+\w)"),
    re.compile(r"(?i:\b(?:option|choice))\s*\(?([A-Za-z])\b(?!(?<=a)\s+\w)"),
]


def _letter_index(text: str, n_options: int) -> int | None:
    """Option index named by a letter in `text`, or None."""
    bare = text.strip(string.punctuation + string.whitespace)
    if len(bare) == 1 and bare.isalpha():
        # Only a prediction that is exactly one letter may be a bare lower-case "a".
        letter = bare
    elif m := _LEADING_LETTER.match(text):
        letter = m.group(1)
    else:
        letter = next((ms[-1] for rx in _KEYWORD_LETTER if (ms := rx.findall(text))), None)
    if letter is None or not letter.isascii():
        return None
    index = ord(letter.upper()) - ord("A")
    return index if index < n_options else None


def _option_index(text: str, options: Sequence[str]) -> int | None:
    # Option text first: with options ["B", "C"], the prediction "B" is the first option's text,
    # not the letter of the second one.
    norm = normalize_answer(text)
    if norm:
        for i, option in enumerate(options):
            if normalize_answer(option) == norm:
                return i
    return _letter_index(text, len(options))


def choice_accuracy(prediction: str, gold: str, options: Sequence[str]) -> float:
    gold_index = _option_index(gold, options)
    if gold_index is None:
        # A gold alias outside the options can still be matched by its text.
        return exact_match(prediction, gold)
    return float(_option_index(prediction, options) == gold_index)


# --- Optima ------------------------------------------------------------------------------------


def _optima_clean(s: str) -> str:
    # Faithful to Optima's reference code: these are character-set strips, not prefix removals,
    # so "madam" loses its outer m's and a's are kept: "madam" -> "ada".
    return s.lower().strip().strip("m=").strip("m = ")


def optima_f1(prediction: str, gold: str, tokenizer) -> float:
    pred = tokenizer.tokenize(_optima_clean(prediction))
    ref = tokenizer.tokenize(_optima_clean(gold))
    if not pred or not ref:
        return 0.0
    return _bag_f1(pred, ref)


# --- registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float]
    higher_is_better: bool = True
    needs_tokenizer: bool = False
    needs_options: bool = False


METRICS: Registry[Metric] = Registry("metric")
METRICS.register("f1", Metric("f1", token_f1))
METRICS.register("em", Metric("em", exact_match))
METRICS.register("accuracy", Metric("accuracy", choice_accuracy, needs_options=True))
METRICS.register("optima_f1", Metric("optima_f1", optima_f1, needs_tokenizer=True))


def score(
    metric_name: str,
    prediction: str,
    golds: Sequence[str],
    *,
    options: Sequence[str] | None = None,
    tokenizer=None,
) -> float:
    """Best score of `prediction` over the gold aliases."""
    metric = METRICS.get(metric_name)
    if isinstance(golds, str):
        # A bare string would be scored character by character.
        raise HarnessError(f"metric {metric_name!r}: golds must be a list of strings, got a str")
    if not golds:
        raise HarnessError(f"metric {metric_name!r}: no gold answers to score against")
    kwargs = {}
    if metric.needs_options:
        if not options:
            raise HarnessError(f"metric {metric_name!r} needs the answer options (options=...)")
        kwargs["options"] = options
    if metric.needs_tokenizer:
        if tokenizer is None:
            raise HarnessError(f"metric {metric_name!r} needs a tokenizer (tokenizer=...)")
        kwargs["tokenizer"] = tokenizer
    return max(metric.fn(prediction, gold, **kwargs) for gold in golds)
