"""What an influence estimate holds, the units it scores, and the facts of the pairs it reads."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Estimate:
    units: list[list[int]]  # pool indices of each unit's pairs
    # F(theta*) and F(theta') per unit; loss influence: the validation DPO loss; the screen path: the
    # surrogate S(theta*) and its first-order prediction per unit (`screen_path`)
    f_before: float
    f_after: list[float]
    changed_answers: list[int]  # validation answers that differ from theta*'s, per unit
    validation_ids: list[str]
    seconds: dict
    eta: float  # the unit steps' learning rate (calibrated with eta_auto)
    validation_dialogues: int  # every validation dialogue run: theta*, calibration trials and units
    usage: dict = field(default_factory=dict)  # the validation dialogues' tokens and requests
    calibration: list[dict] = field(default_factory=list)  # eta_auto's trials: eta, changed answers per unit
    reused: bool = False  # read from the cache: computed by an earlier selection (its seconds are not this one's)
    # The fast path's account: draft dialogues that held, dialogues decoded again and their turns,
    # near-ties (checked positions, tokens decoded in steps that fed guesses, and rescored utterances
    # whose top two logits or option scores are within NEAR_TIE: where its outcome could differ from
    # the reference path's), tokens the checks encoded and those they read from the agents' openings
    # encoded once a unit; in answer_mode=choice the utterances rescored and the answers that moved;
    # with certification (`certify`) the dialogues certified, audited and wrongly certified (the
    # target is none), and the certificates' precomputation in seconds (`certify_seconds`).
    drafts: dict = field(default_factory=dict)
    # the unit steps' seconds: the steps (the fast path: the units' gradients and their updates), the
    # validation, and the fast path's certificates (`certify`)
    unit_seconds: dict = field(default_factory=dict)
    path: str = ""  # the influence path taken (`estimator.path_for`)
    # Each validation question's score at theta* and after each unit's step (metric influence): the
    # split-half reliability of I reads them (`scoring.split_half`)
    items_before: list[float] = field(default_factory=list)
    items_after: list[list[float]] = field(default_factory=list)
    frozen_speakers: dict = field(default_factory=dict)  # the roster's frozen speakers' model identities, by name

    def per_pair(self, values: list[float], n: int) -> list[float]:
        out = [0.0] * n
        for unit, value in zip(self.units, values):
            for i in unit:
                out[i] = value
        return out


def make_units(n: int, size: int, seed: int) -> list[list[int]]:
    """Blocks of `size` consecutive pairs of a seeded shuffle of the pool (the reference's blocks)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + size] for i in range(0, n, size)]


def answer_mode(pairs: list[dict]) -> str:
    """The answer mode the pairs were grown in (`harness synth` records it; older pairs: generate):
    validation dialogues read answers the same way."""
    return pairs[0].get("answer_mode", "generate") if pairs else "generate"


def closing_turn(pairs: list[dict]) -> bool:
    """Whether the pairs' dialogues had the closing answer turn (older pairs: no); validation
    dialogues run the same way."""
    return bool(pairs and pairs[0].get("closing_turn", False))

