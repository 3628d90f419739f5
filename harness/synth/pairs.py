"""Preference pairs from a grown tree (Optima's `generate`, docs/reference-code.md §7.6).

At every node with two or more children, the best and the worst child by Q form a pair when the
best Q exceeds `dpo_epsilon` and the gap exceeds `dpo_min_gap`; each tree keeps the `keep_fraction`
of its pairs with the best chosen Q. Best and worst are computed here, from the final Q-values:
the reference keeps min/max child pointers updated during backup, which go stale when a child's Q
later drops.

Where several models act (TOA), a node's alternatives for the next turn are its children and every
rewrite of them (refine nodes, which say the same turn after the same prompt), and a pair records
which model wrote each side and by which action (`chosen_model`, `rejected_model`,
`chosen_action`, `rejected_action`): the run's policy is trained on them, the other models'
utterances off-policy. Optima's pairs carry none of these keys, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.synth.mcts import Node, Tree


@dataclass(frozen=True)
class PairRule:
    dpo_epsilon: float
    dpo_min_gap: float = 0.2
    keep_fraction: float = 0.5


def extract_pairs(tree: Tree, rule: PairRule) -> list[dict]:
    """The tree's pairs, best chosen Q first. The prompt is the next speaker's memory at the node:
    its system prompt with its own context, then the dialogue so far. Only the policy's agents get
    pairs: a frozen speaker's turns are context, never trained."""
    pairs = []
    for node in tree.nodes:
        ends = best_and_worst(tree, node)
        if ends is None:
            continue
        best, worst = ends
        if best.q <= rule.dpo_epsilon or best.q - worst.q <= rule.dpo_min_gap:
            continue
        pairs.append({
            "pair_id": f"{tree.tree_id}/n{node.id}", "tree_id": tree.tree_id, "question_id": tree.question.id,
            "node_id": node.id, "depth": node.depth, "speaker": best.utterance.speaker,
            "prompt": prompt_at(tree, node, best),
            "chosen": best.text, "rejected": worst.text, "q_chosen": best.q, "q_rejected": worst.q,
            "visits_chosen": best.visits, "visits_rejected": worst.visits,
            "chosen_node": best.id, "rejected_node": worst.id,
        } | authors(best, worst))
    pairs.sort(key=lambda p: -p["q_chosen"])
    if len(pairs) >= 2:
        pairs = pairs[:max(1, int(rule.keep_fraction * len(pairs)))]
    return pairs


def authors(best: Node, worst: Node) -> dict:
    """Who wrote each side and how, where several models act; nothing in Optima's trees."""
    if best.model is None:
        return {}
    return {"chosen_model": best.model, "rejected_model": worst.model,
            "chosen_action": best.action, "rejected_action": worst.action}


def alternatives(tree: Tree, node: Node) -> list[Node]:
    """What was said after the node, for its next turn: its (generate) children and every rewrite of
    them, in tree order. In Optima's trees, the children."""
    out, todo = [], [tree.nodes[c] for c in node.children if tree.nodes[c].action == "generate"]
    while todo:
        n = todo.pop(0)
        out.append(n)
        todo += [tree.nodes[c] for c in n.children if tree.nodes[c].action == "refine"]
    return sorted(out, key=lambda n: n.id)


def best_and_worst(tree: Tree, node: Node) -> tuple[Node, Node] | None:
    """The best and worst of the node's alternatives by Q; None below two or where a frozen speaker
    says them."""
    children = alternatives(tree, node)
    if len(children) < 2 or tree.roster.agents[tree.next_agent(node)].frozen:
        return None
    return max(children, key=lambda n: n.q), min(children, key=lambda n: n.q)


def prompt_at(tree: Tree, node: Node, best: Node) -> list[dict]:
    """The next speaker's memory at the node, as a pair's prompt."""
    at = tree.dialogue(node.id, key="", max_turns=node.depth + 1)
    at.closing = best.utterance.closing  # closing answers were said after the closing instruction
    return at.messages(tree.next_agent(node))
