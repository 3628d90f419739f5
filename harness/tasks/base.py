"""What every task adapter shares: the Question record, row validation and the three data sources.

A task reads ``<data_dir>/<task>/<split>.jsonl`` in the dataset's Hugging Face schema when a data
directory is set (``--data-dir`` or ``HARNESS_DATA_DIR``); otherwise, when online, the hub through
``datasets``; otherwise the project-written sample in ``tasks/fixtures/`` with a one-line warning
(CBT first builds items from the books shipped with the harness, see ``harness.data.shipped``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

from harness.errors import HarnessError
from harness.runs import read_jsonl

log = logging.getLogger(__name__)

FIXTURES = Path(__file__).parent / "fixtures"
SPLITS = ("train", "validation", "test")
SETTINGS = ("information_exchange", "debate", "web")
CONTEXT_MODES = ("paragraph", "first_sentence")
ANSWER_MODES = ("generate", "choice")
# About 50,000 tokens: six times the context of the models the presets run (SmolLM2 and Llama-3-8B,
# 8,192 tokens), so no real row comes near it, while a row over it would only exhaust the memory of
# the first forward pass.
MAX_QUESTION_CHARS = 200_000
_WARNED_SAMPLES: set[str] = set()  # tasks whose sample warning was given: every stage loads data


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    golds: tuple[str, ...]
    # The context dealt into the task's slots, one per context-holding agent in roster order (Alice's
    # and Bob's in information exchange); () for a question without any (debate, the lm-eval bridge)
    contexts: tuple[tuple[str, ...], ...] = ()
    options: tuple[str, ...] | None = None
    # answer_mode=choice: per option, the text whose log-likelihood after an agent's memory scores
    # that option (empty: " " + the option)
    continuations: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.options and not self.continuations:
            object.__setattr__(self, "continuations", tuple(f" {o}" for o in self.options))


def check_data_dir(data_dir: Path) -> None:
    """Refuses a data directory that is not there, or is a file."""
    if data_dir.is_file():
        raise HarnessError(f"{data_dir}: a file, not a data directory (a folder of TASK/SPLIT.jsonl files)")
    if not data_dir.is_dir():
        raise HarnessError(f"{data_dir}: data directory not found")


class RowError(ValueError):
    """Raised by `to_question` for a row that breaks the schema; the loader adds file and line."""


def require(row: dict, *keys: str) -> None:
    for key in keys:
        node: Any = row
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise RowError(f"missing key {key!r}")
            node = node[part]


def row_hash(row: dict) -> str:
    """A stable id for datasets whose rows carry none (CBT, MMLU, WebWalkerQA)."""
    return hashlib.sha1(json.dumps(row, sort_keys=True).encode()).hexdigest()[:16]


def options_text(options: Iterable[str]) -> str:
    return "\nPlease choose your answer from " + repr(list(options))


def blocks(items: Sequence[str], slots: int) -> tuple[tuple[str, ...], ...]:
    """`items` in `slots` consecutive blocks, later blocks one longer where they do not divide evenly
    (two slots: the first half and the second)."""
    bounds = [i * len(items) // slots for i in range(slots + 1)]
    return tuple(tuple(items[lo:hi]) for lo, hi in zip(bounds, bounds[1:]))


def round_robin(items: Sequence[str], slots: int) -> tuple[tuple[str, ...], ...]:
    """`items` dealt one at a time to each slot in turn."""
    return tuple(tuple(items[i::slots]) for i in range(slots))


@dataclass(frozen=True)
class Recipe:
    """A task's training recipe: the reward weights, pair threshold, DPO temperature and SFT
    threshold of the reference recipes (iSFT-DPO / DITS, docs/reference-code.md §5 and §6.3)."""

    lambda1: float  # the reward's token-penalty weight (negative)
    lambda2: float  # the reward's language-loss weight
    dpo_epsilon: float  # a pair's chosen response's Q must exceed it
    dpo_beta: float  # the DPO temperature of the task's iSFT-DPO recipe
    sft_epsilon: float  # an SFT dialogue's reward must reach it (the reference's initial_episilon)


# The information-exchange QA recipe: a task without a reference recipe of its own trains with it.
QA_RECIPE = Recipe(lambda1=-0.6, lambda2=1.0, dpo_epsilon=0.4, dpo_beta=0.1, sft_epsilon=0.5)


class Task:
    """A task is data about a dataset plus one row parser; subclasses set the class attributes."""

    name: ClassVar[str]
    dataset: ClassVar[str | None]  # hub path; None when the dataset is not on the hub
    hub_config: ClassVar[str | None] = None
    hub_splits: ClassVar[dict[str, str]]  # our split -> hub split expression
    setting: ClassVar[str]
    metric: ClassVar[str]
    licence: ClassVar[str]
    sizes: ClassVar[str]  # public split sizes, for `harness ls tasks`
    choices: ClassVar[bool] = False  # its questions have options: answer_mode=choice applies
    recipe: ClassVar[Recipe] = QA_RECIPE  # how the harness trains on it
    breakdown: ClassVar[tuple[str, ...]] = ()  # question labels (meta) its evaluation is broken down by

    def __init__(self, context_mode: str = "paragraph", seed: int = 0, slots: int = 2):
        """`slots`: how many agents the context is dealt to (`Roster.slots`; 2, the informants of the
        information exchange roster, by default). Tasks without a context deal none."""
        if context_mode not in CONTEXT_MODES:
            raise HarnessError(f"context_mode must be one of {', '.join(CONTEXT_MODES)}, got {context_mode!r}")
        if slots < 0:
            raise HarnessError(f"context slots must be 0 or more, got {slots}")
        self.context_mode = context_mode
        self.seed = seed
        self.slots = slots

    def to_question(self, row: dict, split: str) -> Question:
        raise NotImplementedError

    def answer_mode(self, requested: str) -> str:
        """The answer mode a run of this task uses: choice where its questions have options, else
        generate (the answer parsed from <A>...</A>)."""
        if requested not in ANSWER_MODES:
            raise HarnessError(f"answer_mode must be one of {', '.join(ANSWER_MODES)}, got {requested!r}")
        return requested if self.choices else "generate"

    def rng(self, qid: str) -> random.Random:
        """Per-question randomness for context splits: independent of load order and batch size."""
        return random.Random(f"{self.seed}:{self.name}:{qid}")

    # -- loading -----------------------------------------------------------------------------
    def load(self, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None,
             online: bool = False) -> list[Question]:
        if split not in SPLITS:
            raise HarnessError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        data_dir = data_dir or os.environ.get("HARNESS_DATA_DIR") or None
        if data_dir:
            rows = self._read_local(Path(data_dir), split)
        elif online and self.dataset:
            rows = self.read_hub(split, limit=limit)
        elif (built := self.default_data_dir())[0] is not None:
            rows = self._read_local(built[0], split)
        else:
            path = FIXTURES / self.name / f"{split}.jsonl"
            if self.name not in _WARNED_SAMPLES:
                _WARNED_SAMPLES.add(self.name)
                log.warning("no data directory set and the hub is not used: reading the project-written "
                            "sample in %s (set --data-dir or HARNESS_DATA_DIR for real data)%s", path.parent,
                            f"; {built[1]}" if built[1] else "")
            rows = [(path, i, r) for i, r in read_jsonl(path)]
        self.source = str(rows[0][0]) if rows else None  # what a run record names as its data
        return self.parse(rows[:limit], split)

    def default_data_dir(self) -> tuple[Path | None, str]:
        """A data directory the task makes for itself when none is set and the hub is not used, or
        (None, why not): then the project-written sample is read. Only CBT makes one."""
        return None, ""

    def parse(self, rows: list[tuple[Any, int, dict]], split: str) -> list[Question]:
        """Questions from `(source, line, row)` triples; a row that breaks the schema, repeats an
        earlier row's id or holds more text than any model can read is one `source:line: reason` error."""
        questions, seen = [], {}
        for source, line, row in rows:
            try:
                question = self.to_question(row, split)
            except RowError as e:
                raise HarnessError(f"{source}:{line}: {e}") from None
            except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
                # a field of the wrong type (a number where the schema has a list) breaks the parser
                raise HarnessError(f"{source}:{line}: a field has the wrong type ({type(e).__name__}: {e})") from None
            if question.id in seen:
                if question.id != row_hash(row):
                    raise HarnessError(f"{source}:{line}: id {question.id!r} repeats line {seen[question.id]} "
                                       "(run records key their items by id)")
                # a dataset without ids may hold a row twice (MMLU's auxiliary_train does): the copy
                # gets its own id, so per-item records stay one an item
                question = replace(question, id=f"{question.id}-{line}")
            seen[question.id] = line
            size = len(question.question) + sum(len(text) for slot in question.contexts for text in slot)
            if size > MAX_QUESTION_CHARS:
                raise HarnessError(f"{source}:{line}: {size:,} characters of question and context, over the "
                                   f"{MAX_QUESTION_CHARS:,} any model the harness runs can read")
            questions.append(question)
        return questions

    def _read_local(self, data_dir: Path, split: str) -> list[tuple[Any, int, dict]]:
        check_data_dir(data_dir)
        if not (data_dir / self.name).is_dir():
            have = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise HarnessError(f"{data_dir / self.name}: no {self.name} folder in this data directory "
                               f"(it has: {', '.join(have) or 'no folders'})")
        path = data_dir / self.name / f"{split}.jsonl"
        if not path.is_file():
            have = sorted(p.stem for p in (data_dir / self.name).glob("*.jsonl"))
            raise HarnessError(f"{path}: not found (this data directory has {self.name} splits: "
                               f"{', '.join(have) or 'none'})")
        rows = [(path, i, r) for i, r in read_jsonl(path)]
        if not rows:
            raise HarnessError(f"{path}: no rows (an empty {split} split)")
        return rows

    def read_hub(self, split: str, source: dict | None = None,
                 limit: int | None = None) -> list[tuple[Any, int, dict]]:
        """The split's rows through `datasets.load_dataset`. `source` replaces the hub id with other
        `load_dataset` arguments, e.g. `{"path": "parquet", "data_files": {"test": "test.parquet"}}`
        for files downloaded from the hub, read with the hub's split names and slices."""
        import datasets

        expr = self.hub_splits.get(split)
        if expr is None:
            raise HarnessError(f"{self.name} has no {split} split on the hub ({self.dataset})")
        args = source or {"path": self.dataset, "name": self.hub_config}
        where = f"hub:{self.dataset}/{expr}" if source is None else f"{args['path']}:{expr}"
        try:
            ds = datasets.load_dataset(**args, split=expr)
        except Exception as e:  # the hub's failures come in many types; the user needs one line
            raise HarnessError(f"could not load {where}: {type(e).__name__}: {e}".splitlines()[0]) from None
        return [(where, i + 1, row) for i, row in enumerate(itertools.islice(ds, limit))]
