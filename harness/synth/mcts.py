"""One search tree per question over a roster's dialogues (Optima's MCTS, docs/reference-code.md §7).

A node is one utterance; the root is the empty dialogue, the roster's first agent to speak, and a
node at depth d is followed by the utterance of the agent whose turn d is. Q is the mean reward of
the rollouts that passed through a node. Each iteration selects one node, runs `expand_time`
rollouts from it to the end of the dialogue, adds every utterance they generated to the tree (an
utterance close to an existing sibling merges into it) and backs the rewards up to the root.

Selection is the reference's, not UCT: among the expandable nodes (the root, and nodes with
children whose first child has children), drop those within `select_distance` of a node selected
before, then sample one of the `select_top_k` best by softmax over Q. With `influence_weight` w > 0
(DITS's influence-oriented expansion, README "Synthesis") a candidate's value is Q + w * minmax(I)
instead, I its influence estimate min-max normalised over the candidates. The pure parts live here;
the batched rollouts and the estimates' refresh (`harness.synth.guidance`) live beside it.

Several models (TOA, `harness.synth.actions`): a node then records the model that wrote its
utterance and the action that made it, `generate` (the next turn) or `refine` (a rewrite of its
parent's utterance, the same turn: the dialogue at a refine node has it in its parent's place).
Optima's trees record neither, so their records are as before.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from harness.mas.dialogue import Dialogue, Utterance
from harness.mas.roster import Roster
from harness.tasks.base import Question


def select_distance(a: str, b: str) -> float:
    """Character edit distance normalised by the longer string (the selection filter's)."""
    return Levenshtein.distance(a, b) / (max(len(a), len(b)) + 1)


def merge_distance(new: str, existing: str) -> float:
    """Character edit distance normalised by the new utterance (the sibling merge's)."""
    return Levenshtein.distance(new, existing) / (len(new) + 1)


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int  # utterances from the root to this node; the root is 0
    utterance: Utterance | None  # None at the root
    children: list[int] = field(default_factory=list)
    q: float = 0.0
    visits: int = 0
    model: str | None = None  # the model that wrote the utterance, where several act (TOA); None: Optima's tree
    action: str = "generate"  # "generate": the next turn; "refine": its parent's turn rewritten

    @property
    def text(self) -> str:
        return self.utterance.text if self.utterance else ""


@dataclass(frozen=True)
class Estimate:
    """The influence screen's value for a node's pair, with the best and worst child it was computed for
    (a later backup can change them, which makes the estimate stale)."""

    chosen: int
    rejected: int
    value: float


@dataclass
class Tree:
    tree_id: str
    question: Question
    roster: Roster
    systems: tuple[str, ...]  # each agent's system prompt, in roster order
    rng: random.Random
    nodes: list[Node] = field(default_factory=lambda: [Node(0, None, 0, None)])
    selected: list[int] = field(default_factory=list)
    rollouts: list[dict] = field(default_factory=list)
    estimates: dict[int, Estimate] = field(default_factory=dict)  # node id -> its pair's influence estimate
    # (node id, model, action) -> [visits, mean value] of the actions taken there (TOA; empty in Optima's)
    edges: dict[tuple[int, str, str], list] = field(default_factory=dict)
    # node id -> the coach's score of its utterance {"score", "parsed"} (synth.credit; empty without one)
    credit: dict[int, dict] = field(default_factory=dict)

    def path(self, node_id: int) -> list[Node]:
        """The dialogue's nodes from the root's first child down to `node_id`: a refine node stands in
        the place of the utterance it rewrote (its parent)."""
        out = []
        while node_id:
            node = self.nodes[node_id]
            out.append(node)
            node_id = node.parent
            while node.action == "refine":  # skip the draft it replaces (and the drafts that one replaced)
                node = self.nodes[node_id]
                node_id = node.parent
        return out[::-1]

    def turn_parent(self, node_id: int) -> int:
        """The node a turn follows: its parent, or for a refine node its draft's turn parent."""
        node = self.nodes[node_id]
        while node.action == "refine":
            node = self.nodes[node.parent]
        return node.parent

    def next_agent(self, node: Node) -> int:
        """The agent who says the node's children."""
        return self.roster.speaker(node.depth)

    def dialogue(self, node_id: int, key: str, max_turns: int, closing_turn: bool = False) -> Dialogue:
        """The dialogue as it stands at a node, ready to be continued."""
        d = Dialogue(self.question, self.systems, key=key, roster=self.roster)
        for node in self.path(node_id):
            d.add(node.utterance, max_turns, closing_turn)
        return d

    def expandable(self) -> list[Node]:
        return [n for n in self.nodes if n.id == 0 or (n.children and self.nodes[n.children[0]].children)]

    def select(self, distance: float, top_k: int, influence_weight: float = 0.0) -> Node:
        chosen = [self.nodes[i].text for i in self.selected]
        candidates = [n for n in self.expandable() if all(select_distance(n.text, c) >= distance for c in chosen)]
        if not candidates:
            node = self.nodes[0]
        else:
            value = dict(zip((n.id for n in candidates), self.values(candidates, influence_weight)))
            top = sorted(candidates, key=lambda n: -value[n.id])[:top_k]
            node = self.rng.choices(top, weights=softmax([value[n.id] for n in top]))[0]
        self.selected.append(node.id)
        return node

    def values(self, candidates: list[Node], influence_weight: float) -> list[float]:
        """Each candidate's selection value: Q, plus `influence_weight` times its influence estimate
        min-max normalised over the candidates. Weight 0 gives Q itself, so Optima's search is untouched."""
        if not influence_weight:
            return [n.q for n in candidates]
        normalised = minmax([self.influence(n) for n in candidates])
        return [n.q + influence_weight * i for n, i in zip(candidates, normalised)]

    def influence(self, node: Node) -> float:
        """The estimate of the node's pair (best and worst child), else its nearest ancestor's; 0 without any."""
        while node.id not in self.estimates:
            if node.parent is None:
                return 0.0
            node = self.nodes[node.parent]
        return self.estimates[node.id].value

    def add(self, parent_id: int, utterance: Utterance, distance: float, model: str | None = None,
            action: str = "generate") -> Node:
        """The child of `parent_id` for this utterance: an existing sibling made by the same action within
        `distance`, or a new node (a refine child says the parent's turn again, at the parent's depth)."""
        parent = self.nodes[parent_id]
        for child_id in parent.children:
            child = self.nodes[child_id]
            if child.action == action and merge_distance(utterance.text, child.text) < distance:
                return child
        depth = parent.depth if action == "refine" else parent.depth + 1
        node = Node(len(self.nodes), parent_id, depth, utterance, model=model, action=action)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def backup(self, node_id: int | None, reward: float) -> None:
        while node_id is not None:
            node = self.nodes[node_id]
            node.visits += 1
            node.q += (reward - node.q) / node.visits
            node_id = node.parent

    def backup_values(self, values: dict[int, float]) -> None:
        """One rollout's value for each node it passed (by node id), each node's own: per-utterance
        credit (`synth.credit`), where `backup` gives every node the rollout's one reward."""
        for node_id, value in values.items():
            node = self.nodes[node_id]
            node.visits += 1
            node.q += (value - node.q) / node.visits

    def record_edge(self, node_id: int, model: str, action: str, value: float) -> None:
        """One more value of the action `(model, action)` taken at a node (TOA's edge statistics)."""
        visits, q = self.edges.get((node_id, model, action), (0, 0.0))
        self.edges[(node_id, model, action)] = [visits + 1, q + (value - q) / (visits + 1)]

    # -- records -----------------------------------------------------------------------------
    def to_record(self) -> dict:
        # Estimates only where there are some, so a search without influence writes Optima's records as before.
        estimates = [{"node": i, "chosen": e.chosen, "rejected": e.rejected, "value": e.value}
                     for i, e in sorted(self.estimates.items())]
        edges = [{"node": n, "model": m, "action": a, "visits": v, "q": q}
                 for (n, m, a), (v, q) in sorted(self.edges.items())]
        credit = [{"node": n, **c} for n, c in sorted(self.credit.items())]
        return {
            "tree_id": self.tree_id, "question_id": self.question.id, "selected": self.selected,
            "nodes": [{"id": n.id, "parent": n.parent, "depth": n.depth, "q": n.q, "visits": n.visits,
                       "children": n.children, "utterance": n.utterance.record() if n.utterance else None}
                      | ({"model": n.model, "action": n.action} if n.model is not None else {})
                      for n in self.nodes],
            "rollouts": self.rollouts,
        } | ({"estimates": estimates} if estimates else {}) | ({"edges": edges} if edges else {}) | (
            {"credit": credit} if credit else {})

    @classmethod
    def from_record(cls, record: dict, question: Question, roster: Roster, systems: tuple[str, ...]) -> "Tree":
        nodes = [Node(n["id"], n["parent"], n["depth"], Utterance(**n["utterance"]) if n["utterance"] else None,
                      list(n["children"]), n["q"], n["visits"], n.get("model"), n.get("action", "generate"))
                 for n in record["nodes"]]
        # A search without influence records no estimates; one model (Optima's) no models and no edges.
        estimates = {e["node"]: Estimate(e["chosen"], e["rejected"], e["value"]) for e in record.get("estimates", [])}
        edges = {(e["node"], e["model"], e["action"]): [e["visits"], e["q"]] for e in record.get("edges", [])}
        credit = {c["node"]: {k: v for k, v in c.items() if k != "node"} for c in record.get("credit", [])}
        return cls(record["tree_id"], question, roster, systems, random.Random(), nodes, list(record["selected"]),
                   list(record["rollouts"]), estimates, edges, credit)


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def minmax(values: list[float]) -> list[float]:
    """Values rescaled to [0, 1]; all 0 when they are all equal (nothing to prefer)."""
    low, high = min(values), max(values)
    return [(v - low) / (high - low) if high > low else 0.0 for v in values]
