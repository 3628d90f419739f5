"""Influence-guided search: the node estimates the selection adds to Q (`Tree.values`).

A node's estimate is the influence screen's value for the pair its children make now (best and worst
by Q, as `harness.synth.pairs` builds it). Before each selection the estimates whose pair changed in
the last backups, or that have none yet, are requested for all trees of a batch in one call of
`node_influence(pairs) -> values` (higher = more helpful), so the screen batches its work.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.synth.mcts import Estimate, Tree
from harness.synth.pairs import best_and_worst, prompt_at

NodeInfluence = Callable[[list[dict]], list[float]]


def refresh_estimates(trees: list[Tree], node_influence: NodeInfluence) -> int:
    """Brings every tree's estimates up to date with its Q-values; returns how many were requested."""
    wanted = []  # (tree, node id, best, worst, pair)
    for tree in trees:
        for node in tree.nodes:
            ends = best_and_worst(tree, node)
            # Children tied in Q make no pair (best is worst): the node falls back to its parent's.
            if ends is None or ends[0] is ends[1]:
                tree.estimates.pop(node.id, None)
                continue
            best, worst = ends
            held = tree.estimates.get(node.id)
            if held is None or (held.chosen, held.rejected) != (best.id, worst.id):
                pair = {"prompt": prompt_at(tree, node, best), "chosen": best.text, "rejected": worst.text}
                wanted.append((tree, node.id, best.id, worst.id, pair))
    if wanted:
        values = node_influence([pair for *_, pair in wanted])
        for (tree, node_id, best, worst, _), value in zip(wanted, values, strict=True):
            tree.estimates[node_id] = Estimate(best, worst, float(value))
    return len(wanted)
