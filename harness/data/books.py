"""Books for the CBT builder: plain-text books and CBT's own tokenised book files, their titles and
checksums, which of them are CBT's test books, and the split each goes to."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.tasks.base import SPLITS

log = logging.getLogger(__name__)

CBT_HEADER = "_BOOK_TITLE_ : "
# CBT's own book files (CBTest/data/cbt_*.txt) say in their name which split their books are in.
CBT_FILE_SPLITS = {"cbt_train": "train", "cbt_valid": "validation", "cbt_test": "test"}
# The five books of CBT's test split, as cbt_test.txt names them. Their text must stay out of train.
CBT_TEST_TITLES = ("The Yellow Fairy Book", "Alice's Adventures in Wonderland",
                   "Lucy Maud Montgomery Short Stories, 1902 to 1903", "The Jungle Book",
                   "The Adventures of Old Mr. Toad")
SHINGLE = 8  # words a run; runs this long are rarely shared by chance
DUPLICATE = 0.5  # share of a book's runs found in CBT's test books that makes it a copy of one
HELD_OUT_SHARE = 0.2  # of the books without a fixed split, to each of test and validation
SPLITS_FILE = "splits.json"  # optional, in a books folder: {"<file>": "<split>"}, fixed splits for its books


@dataclass
class Book:
    name: str  # path under the books folder; `path#title` for a book inside a CBT book file
    title: str
    text: str
    tokenised: bool  # CBT's format: one tokenised sentence a line
    split: str | None = None  # where it goes; None when it is left out
    reason: str = ""  # why it goes there
    sha256: str = field(init=False)

    def __post_init__(self):
        self.sha256 = hashlib.sha256(self.text.encode()).hexdigest()


def normal_title(title: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", title.lower().replace("’", "").replace("'", "")))


def read_books(folder: Path) -> list[Book]:
    """Every `*.txt` below `folder`: a plain book (its first line is its title) or a CBT book file
    (several books, each opening with a `_BOOK_TITLE_` line). Unreadable files are skipped with a warning."""
    if not folder.is_dir():
        raise HarnessError(f"{folder}: not a folder")
    books = []
    for path in sorted(folder.rglob("*.txt")):
        name = str(path.relative_to(folder))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            log.warning("%s: skipped, not readable as UTF-8 text (%s)", path, e)
            continue
        if text.startswith(CBT_HEADER):
            books += cbt_file_books(name, text, CBT_FILE_SPLITS.get(path.stem))
        elif text.strip():
            books.append(Book(name, text.strip().splitlines()[0].strip(), text, tokenised=False))
        else:
            log.warning("%s: skipped, empty", path)
    if not books:
        raise HarnessError(f"{folder}: no books (*.txt files with text) in it")
    return books


def read_declared_splits(folder: Path) -> dict[str, str]:
    """The splits a books folder fixes for its books in `splits.json` (file name under the folder ->
    train, validation or test); empty when there is no such file."""
    path = folder / SPLITS_FILE
    if not path.is_file():
        return {}
    try:
        declared = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HarnessError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(declared, dict):
        raise HarnessError(f"{path}: expected an object mapping book files to splits")
    for name, split in declared.items():
        if split not in SPLITS:
            raise HarnessError(f"{path}: {name}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return declared


def cbt_file_books(name: str, text: str, split: str | None) -> list[Book]:
    parts = re.split(rf"^{re.escape(CBT_HEADER)}(.*)\n", text, flags=re.M)[1:]
    books = []
    for header, body in zip(parts[::2], parts[1::2]):
        # `Andrew_Lang___The_Yellow_Fairy_Book.txt.out`: author, three underscores, title
        title = header.strip().removesuffix(".txt.out").split("___")[-1].replace("_", " ")
        books.append(Book(f"{name}#{title}", title, body, tokenised=True, split=split,
                          reason=f"in CBT's own {split} books" if split else ""))
    return books


def shingles(text: str) -> set[int]:
    words = re.findall(r"[a-z]+", text.lower())
    return {hash(tuple(words[i:i + SHINGLE])) for i in range(len(words) - SHINGLE + 1)}


def assign_splits(books: list[Book], seed: int, declared: dict[str, str] | None = None) -> None:
    """Set each book's split. CBT's own books keep theirs. A plain copy of a CBT test book (by title,
    or by sharing most of its text with one given here) goes to test, or is left out when CBT's own
    copy is here. A book named in `declared` (the folder's splits.json) goes where it says, which
    must agree with those rules. The other books are shuffled by `seed`; about a fifth of them go to
    each held-out split that no book fills yet (at least one while train keeps one; a lone book is a
    test set)."""
    declared = declared or {}
    unknown = sorted(set(declared) - {b.name for b in books})
    if unknown:
        raise HarnessError(f"{SPLITS_FILE} names books that are not in the folder: {', '.join(unknown)}")
    cbt_test = [b for b in books if b.tokenised and b.split == "test"]
    test_titles = {normal_title(t) for t in CBT_TEST_TITLES}
    copies = {normal_title(b.title) for b in cbt_test}
    test_runs = set().union(*(shingles(b.text) for b in cbt_test))
    free = []
    for book in books:
        if book.tokenised and book.split:
            continue
        runs = shingles(book.text) if test_runs else set()
        shared = len(runs & test_runs) / len(runs) if runs else 0.0
        if normal_title(book.title) in copies or shared >= DUPLICATE:
            book.split, book.reason = None, (f"left out: a copy of a CBT test book ({shared:.0%} of its "
                                             f"{SHINGLE}-word runs are in CBT's own copy, which is in test)")
        elif normal_title(book.title) in test_titles:
            book.split, book.reason = "test", "a CBT test book (by title): kept out of train"
        elif book.name in declared:
            book.split, book.reason = declared[book.name], f"declared in {SPLITS_FILE}"
        else:
            free.append(book)
    for book in books:
        if book.name in declared and declared[book.name] != book.split:
            raise HarnessError(f"{SPLITS_FILE} puts {book.name} in {declared[book.name]}, but it must be "
                               f"{book.split or 'left out'}: {book.reason}")
    taken = {b.split for b in books if b.split}
    order = sorted(free, key=lambda b: b.name)
    random.Random(seed).shuffle(order)
    for split in ("test", "validation"):
        if split in taken:
            continue
        k = max(1, round(HELD_OUT_SHARE * len(free)))
        if len(free) > 1:
            k = min(k, len(order) - 1)
        for book in order[:k]:
            book.split, book.reason = split, f"seeded shuffle of the other books (seed {seed})"
        order = order[k:]
    for book in order:
        book.split, book.reason = "train", f"seeded shuffle of the other books (seed {seed})"
