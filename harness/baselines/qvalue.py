from harness.config import SelectConfig
from harness.selection import Scores, Selector


class QValueSelector(Selector):
    """The alpha fraction with the best Q of the chosen response (DITS with gamma only, no influence)."""

    def score(self, pairs: list[dict], cfg: SelectConfig) -> Scores:
        return Scores(h=[p["q_chosen"] for p in pairs], influence=[None] * len(pairs))
