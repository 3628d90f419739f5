from harness.config import SelectConfig
from harness.selection import Scores, Selector


class OptimaFullSelector(Selector):
    """Optima: train on every pair the tree search yielded (alpha does not apply)."""

    keeps_all = True

    def score(self, pairs: list[dict], cfg: SelectConfig) -> Scores:
        return Scores(h=[p["q_chosen"] for p in pairs], influence=[None] * len(pairs))
