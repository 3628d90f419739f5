"""CBT items from tagged sentences, by the Children's Book Test's mechanical procedure (Hill et al.,
2016): 20 consecutive sentences of context, the 21st as the query with one word of the chosen type
blanked out, and 10 options of that type drawn from the 21 sentences. Pure functions of their input.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from harness.registry import Registry

CONTEXT = 20  # sentences before the query
OPTIONS = 10  # the answer and 9 distractors
BLANK = "XXXXX"

Sentence = tuple[tuple[str, str], ...]  # (word, Penn Treebank tag) pairs


@dataclass(frozen=True)
class WordType:
    description: str
    tags: tuple[str, ...]  # Penn Treebank tags, as spaCy's English tagger writes them


# CBT's four question types. The original found named entities with a recogniser; NE here is the
# proper-noun tags, which needs no second model.
WORD_TYPES: Registry[WordType] = Registry("CBT word type")
WORD_TYPES.register("CN", WordType("common nouns", ("NN", "NNS")))
WORD_TYPES.register("NE", WordType("named entities, as proper-noun tags", ("NNP", "NNPS")))
WORD_TYPES.register("V", WordType("verbs", ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ")))
WORD_TYPES.register("P", WordType("prepositions", ("IN",)))


def windows(sentences: Sequence[Sentence]) -> list[Sequence[Sentence]]:
    """Consecutive windows of 21 sentences that do not overlap, so no two items share text."""
    size = CONTEXT + 1
    return [sentences[i:i + size] for i in range(0, len(sentences) - size + 1, size)]


def make_item(window: Sequence[Sentence], wtype: WordType, rng: random.Random) -> dict | None:
    """One item in the Hugging Face `cbt` schema, or None when the window has no answer word or
    fewer than 9 distractors of the type."""
    context, query = window[:CONTEXT], window[CONTEXT]
    in_context = {w.lower() for s in context for w, _ in s}
    in_query = Counter(w.lower() for w, _ in query)
    # A word twice in the query would stay visible beside its blank.
    answers = [i for i, (w, tag) in enumerate(query)
               if tag in wtype.tags and w.isalpha() and in_query[w.lower()] == 1 and w.lower() in in_context]
    if not answers:
        return None
    at = rng.choice(answers)
    answer = query[at][0]
    pool = {}  # lower-cased word -> its first spelling: options differ after the metric's normalisation
    for s in window:
        for w, tag in s:
            if tag in wtype.tags and w.isalpha() and w.lower() != answer.lower():
                pool.setdefault(w.lower(), w)
    if len(pool) < OPTIONS - 1:
        return None
    distractors = rng.sample(list(pool.values()), OPTIONS - 1)
    return {
        "sentences": [join(s) for s in context],
        "question": " ".join(BLANK if i == at else w for i, (w, _) in enumerate(query)),
        "answer": answer,
        "options": sorted([answer, *distractors]),  # CBT lists its options sorted
    }


def join(sentence: Sentence) -> str:
    """CBT's text is its tokens separated by single spaces."""
    return " ".join(w for w, _ in sentence)


def book_items(sentences: Sequence[Sentence], wtype: WordType, rng: random.Random,
               limit: int | None = None) -> tuple[list[dict], int]:
    """A book's items in book order (at most `limit`, a seeded sample) and its number of windows."""
    spans = windows(sentences)
    items = [it for it in (make_item(w, wtype, rng) for w in spans) if it is not None]
    if limit is not None and len(items) > limit:
        keep = sorted(rng.sample(range(len(items)), limit))
        items = [items[i] for i in keep]
    return items, len(spans)
