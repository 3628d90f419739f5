"""The DITS selector: H = minmax(I) + gamma * Q over influence units (gamma 0: influence alone), and
its loss-based ablation."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.config import SelectConfig
from harness.dits.influence import answer_mode, estimate
from harness.dits.scoring import combined, influence, resolution
from harness.selection import Scores, Selector

log = logging.getLogger(__name__)


class DITSSelector(Selector):
    """The alpha fraction with the best minmax(influence) + gamma * Q (DITS): influence on the
    validation metric."""

    kind = "metric"
    influence = True

    def score(self, pairs: list[dict], cfg: SelectConfig) -> Scores:
        cache = Path(cfg.pairs).parent / "influence" if cfg.pairs else None
        est = estimate(pairs, cfg, cache, self.kind)
        unit_i = influence(est.f_after, est.f_before, est.eta)
        if self.kind == "loss":  # a step that lowers the validation loss helps
            unit_i = [-i for i in unit_i]
        per_pair = est.per_pair(unit_i, len(pairs))
        facts = {
            "influence": self.kind, "answer_mode": answer_mode(pairs), "influence_path": est.path,
            "f_before": est.f_before, "f_after": est.f_after, "units": est.units,
            "validation_ids": est.validation_ids, "seconds": est.seconds, "usage": est.usage,
            "eta": est.eta, "eta_calibration": est.calibration, "drafts": est.drafts, "unit_seconds": est.unit_seconds,
            "validation_dialogues": est.validation_dialogues, "reused_estimate": est.reused,
            "frozen_speakers": est.frozen_speakers,
            # The reference ranks by F(theta') itself; same order, recorded for comparison.
            "reference_rank_value": est.per_pair(est.f_after, len(pairs)),
            "resolution": resolution(est.f_after, est.changed_answers, len(est.validation_ids), cfg.gamma,
                                     est.items_before, est.items_after),
        }
        fallback = facts["resolution"]["degenerate"]
        if fallback:
            log.warning("%s influence is degenerate: %d distinct values over %d units, so the selection %s",
                        self.kind, facts["resolution"]["distinct_values"], len(unit_i), fallback)
        return Scores(h=combined(per_pair, [p["q_chosen"] for p in pairs], cfg.gamma), influence=per_pair,
                      extra=facts)


class LossInfluenceSelector(DITSSelector):
    """The ablation the paper rejects: influence on the validation DPO loss instead of the metric
    (one step per unit, then the loss on validation pairs: the gold answer over theta*'s turn)."""

    kind = "loss"
