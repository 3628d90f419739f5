import hashlib

from harness.config import SelectConfig
from harness.selection import Scores, Selector


class RandomSelector(Selector):
    """A seeded random alpha fraction of the pool.

    Each pair's draw depends only on the seed and its id, so the choice does not change with the
    pool's order."""

    def score(self, pairs: list[dict], cfg: SelectConfig) -> Scores:
        draws = [int(hashlib.sha256(f"{cfg.seed}:{p['pair_id']}".encode()).hexdigest()[:12], 16) / 16**12
                 for p in pairs]
        return Scores(h=draws, influence=[None] * len(pairs))
