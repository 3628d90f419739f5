"""The screen path (`influence.path=screen`): the first-order screen (`harness.screen`) in place of
the exact influence. theta* and its validation dialogues are the reference path's; each unit's value
is the screen's predicted change of the surrogate S per unit of eta, recorded as F values around
S(theta*) (`Estimate.f_before` = S(theta*), `f_after` = S(theta*) + eta * value) so the selector's
I = (f_after - f_before) / eta is the screen's value and gamma 0 and 1 share the cached estimate.
"""

from __future__ import annotations

import time
from dataclasses import replace

from harness.dits.influence.record import Estimate, answer_mode
from harness.dits.influence.reference_path import ReferencePath
from harness.screen.first_order import InfluenceScreen


class ScreenPath(ReferencePath):
    name = "screen"

    def theta_star_dialogues(self):
        self.at_theta_star = super().theta_star_dialogues()  # the screen's surrogate reads them
        return self.at_theta_star

    def calibrate(self, theta_star, units, answers_before, items_before) -> tuple[float, list[dict]]:
        """No trials: a first-order value per unit of eta does not depend on eta."""
        return self.cfg.influence.eta, []

    def screen(self) -> InfluenceScreen:
        """The screen at theta* (after `begin`)."""
        inf = self.cfg.influence
        return InfluenceScreen(self.model, self.tokenizer, self.at_theta_star, answer_mode(self.pairs),
                               inf.step_optimizer, self.beta, inf.micro_batch)

    def run(self, kind: str = "metric") -> Estimate:
        start = self.begin()
        started = time.perf_counter()
        screen = self.screen()
        surrogate = time.perf_counter()
        values = screen.score_units(self.pairs, start.units)
        self.unit_seconds = {"surrogate_gradient": surrogate - started, "unit_gradients": time.perf_counter() - surrogate}
        scored = [(screen.s_before + start.eta * v, None, None) for v in values]
        return self.finish(replace(start, f_before=screen.s_before), scored, time.perf_counter() - started)
