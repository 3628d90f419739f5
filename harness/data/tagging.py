"""Sentences and part-of-speech tags for the CBT builder, from spaCy: an optional extra
(`pip install 'dits-harness[cbt]'`), imported only when a build starts."""

from __future__ import annotations

import re
import sys

from tqdm.auto import tqdm

from harness.data.books import Book
from harness.data.cbt_items import Sentence, WordType
from harness.errors import HarnessError

INSTALL = "pip install 'dits-harness[cbt]' (spaCy and its small English model)"


class Tagger:
    def __init__(self, model: str):
        try:
            import spacy
        except ImportError:
            raise HarnessError(f"building CBT items needs spaCy: {INSTALL}") from None
        try:
            # The tagger and the sentence splitter are all a build needs; the parser, the entity
            # recogniser and the lemmatiser would triple the time. The attribute ruler maps tags to
            # coarse parts of speech (unread here) and tags only whitespace, which is skipped: it
            # took half of a build.
            self.nlp = spacy.load(model, exclude=["parser", "ner", "lemmatizer", "attribute_ruler"])
        except OSError:
            raise HarnessError(f"spaCy model {model!r} is not installed: {INSTALL}") from None
        if "senter" in self.nlp.disabled:
            self.nlp.enable_pipe("senter")
        if not {"tagger", "senter"} <= set(self.nlp.pipe_names):
            raise HarnessError(f"spaCy model {model!r} has no part-of-speech tagger and sentence splitter")
        self.labels = set(self.nlp.get_pipe("tagger").labels)
        meta = self.nlp.meta
        self.versions = {"spacy": spacy.__version__, "model": f"{meta['lang']}_{meta['name']}",
                         "model_version": meta["version"]}

    def check(self, name: str, wtype: WordType) -> None:
        missing = [t for t in wtype.tags if t not in self.labels]
        if missing:
            raise HarnessError(f"word type {name} needs the tags {', '.join(missing)}, which the tagger "
                               f"{self.versions['model']} lacks")

    def sentences(self, book: Book) -> list[Sentence]:
        """The book's sentences, tagged. CBT's own files are already split and tokenised, one sentence
        a line, and are tagged as they are; plain books are split into paragraphs at blank lines."""
        from spacy.tokens import Doc

        if book.tokenised:
            units = [Doc(self.nlp.vocab, words=line.split()) for line in book.text.splitlines() if line.strip()]
            disable = ["senter"]
        else:
            units = [" ".join(p.split()) for p in re.split(r"\n\s*\n", book.text) if p.strip()]
            disable = []
        out = []
        docs = self.nlp.pipe(units, batch_size=64, disable=disable)
        for doc in tqdm(docs, total=len(units), desc=book.name[:40], unit="para", file=sys.stderr,
                        dynamic_ncols=True, leave=False):
            for sent in ([doc[:]] if book.tokenised else doc.sents):
                words = tuple((t.text, t.tag_) for t in sent if not t.is_space)
                if any(w.isalpha() for w, _ in words):
                    out.append(words)
        return out
