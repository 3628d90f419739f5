"""The selector interface, its registry, and `harness select`.

A selector scores every candidate pair; the pairs with the best score H, an `alpha` fraction of
the pool, are kept. Every selector writes the same columns (I, Q, H, rank, selected), so reports
compare them row for row. Ranking is by H, best first, ties broken by the pool's order, which is
the order synthesis wrote (deterministic per seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from harness import config as cfgmod
from harness import runs
from harness.config import SelectConfig
from harness.errors import HarnessError
from harness.records.spec import FILE, run_spec
from harness.registry import Registry


@dataclass(frozen=True)
class Scores:
    """Per pair, in pool order: H ranks the pairs; I is the influence where the selector has one."""

    h: list[float]
    influence: list[float | None]
    extra: dict | None = None  # selector-specific facts for the run record (e.g. influence resolution)


class Selector(ABC):
    keeps_all = False  # optima_full: alpha does not apply
    influence = False  # DITS and its ablation: gamma weighs Q, and a validation pool is used
    kind: str | None = None  # what an influence selector's influence is measured on: "metric", "loss"

    @classmethod
    def traits(cls) -> dict:
        """What reports need to know of the selector, recorded with each selection (so they read
        it from the record instead of importing the selector)."""
        return {"influence": cls.influence, "keeps_all": cls.keeps_all, "kind": cls.kind}

    @abstractmethod
    def score(self, pairs: list[dict], cfg: SelectConfig) -> Scores:
        """One score per pair, higher is better."""


SELECTORS: Registry[type[Selector]] = Registry("selector")
for _name, _target in {
    "random": "harness.baselines.random_pairs:RandomSelector",
    "qvalue": "harness.baselines.qvalue:QValueSelector",
    "optima_full": "harness.baselines.optima_full:OptimaFullSelector",
    "mappa": "harness.baselines.mappa:MappaSelector",
    "dits": "harness.dits.selector:DITSSelector",
    "loss_influence": "harness.dits.selector:LossInfluenceSelector",
}.items():
    SELECTORS.register(_name, _target)

# `credit=NAME` beside any selector: a function (pairs, kept flags, cfg) -> facts recorded with the
# selection, what the credit signal says of the pairs the selector kept
CREDIT_VIEWS: Registry = Registry("credit")
CREDIT_VIEWS.register("mappa", "harness.baselines.mappa:credit_of_kept")


def budget(n: int, alpha: float) -> int:
    """How many of n pairs an alpha fraction keeps: alpha * n rounded half up, at least one."""
    return max(1, math.floor(alpha * n + 0.5))


def rank(h: list[float]) -> list[int]:
    """1-based rank of each pair by H, best first; equal H keep pool order (a stable sort)."""
    order = sorted(range(len(h)), key=lambda i: -h[i])
    ranks = [0] * len(h)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def select(pairs: list[dict], cfg: SelectConfig) -> tuple[list[dict], list[dict], Scores]:
    """(selected pairs in rank order, one score row per candidate, the scores)."""
    if not pairs:
        raise HarnessError("the candidate pool is empty: nothing to select from")
    if not 0 < cfg.alpha <= 1:
        raise HarnessError(f"alpha must be in (0, 1], got {cfg.alpha}")
    selector = SELECTORS.get(cfg.selector)()
    scores = selector.score(pairs, cfg)
    ranks = rank(scores.h)
    keep = len(pairs) if selector.keeps_all else budget(len(pairs), cfg.alpha)
    rows = [{"pair_id": p["pair_id"], "I": i, "Q": p["q_chosen"], "H": h, "rank": r, "selected": r <= keep}
            for p, i, h, r in zip(pairs, scores.influence, scores.h, ranks)]
    selected = [pairs[i] for i in sorted(range(len(pairs)), key=lambda i: ranks[i])[:keep]]
    if cfg.credit and "coach_spent" not in (scores.extra or {}):  # mappa's own facts are the coach's already
        view = CREDIT_VIEWS.get(cfg.credit)(pairs, [r["selected"] for r in rows], cfg)
        scores = dataclasses.replace(scores, extra=(scores.extra or {}) | view)
    return selected, rows, scores


def read_pairs(path: Path) -> list[dict]:
    """Pairs written by `harness synth`; a malformed line is one `file:line: reason` error."""
    if not path.is_file():
        raise HarnessError(f"{path}: pairs file not found")
    pairs = []
    for n, pair in runs.read_jsonl(path):
        for key in ("pair_id", "question_id", "task", "policy", "prompt", "chosen", "rejected", "q_chosen"):
            if key not in pair:
                raise HarnessError(f"{path}:{n}: missing key {key!r}")
        pairs.append(pair)
    for key in ("task", "policy"):
        values = {json.dumps(p[key], sort_keys=True) for p in pairs}
        if len(values) > 1:
            raise HarnessError(f"{path}: pairs from more than one {key}: {', '.join(sorted(values))}")
    return pairs


def run_select(cfg: SelectConfig) -> tuple[Path, list[dict], list[dict]]:
    """`harness select`: writes selected.jsonl, scores.jsonl and run_spec.json."""
    if not cfg.selector or not cfg.pairs:
        raise HarnessError("--selector NAME and --pairs FILE are required")
    pairs = read_pairs(Path(cfg.pairs))
    selected, rows, scores = select(pairs, cfg)
    rid = runs.run_id("select", selector=cfg.selector, task=pairs[0]["task"], alpha=cfg.alpha,
                      gamma=cfg.gamma if SELECTORS.get(cfg.selector).influence else None, seed=cfg.seed)
    out = Path(cfg.out) if cfg.out else Path(cfg.pairs).parent / "select" / runs.dir_name(rid)
    record = run_spec("select", rid, cfgmod.as_dict(cfg), cfg.seed, task=pairs[0]["task"], policy=pairs[0]["policy"],
                      candidates=len(pairs), selected=len(selected), selector_facts=scores.extra or {},
                      selector_traits=SELECTORS.get(cfg.selector).traits())
    with runs.run_directory(out) as tmp:
        runs.write_jsonl(tmp / "selected.jsonl", selected)
        runs.write_jsonl(tmp / "scores.jsonl", rows)
        runs.write_json(tmp / FILE, record)
    return out, selected, rows
