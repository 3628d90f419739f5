"""A coach's per-utterance credit as the tree search's node values (`synth.credit=mappa`).

MAPPA rewards each agent's action with the coach's score of that action alone, so an agent is not
credited or blamed for what its partners said after it. Here every utterance of a tree is scored
once (the speaker's memory before it, as its pairs' prompt, and what it said), and the value a
rollout backs up into a node is that node's own score / 10; the root takes the mean of the
dialogue's. Q is then the coach's credit, and pairs (best against worst alternative by Q) compare
what the coach credited. MAPPA trains on these rewards with REINFORCE++; here they only choose the
DPO pairs, so rows trained on them are MAPPA-style coach credit (DPO), not MAPPA.

The search's `credit.json` holds the coach's figures for reports (`harness.credit.stats`): every
scored utterance with its agent, action type, score, and the mean Optima reward and task score of
the rollouts whose dialogue holds it.
"""

from __future__ import annotations

import statistics

from harness.config import SynthConfig
from harness.credit.coach import CREDITS, Action, Coach
from harness.credit.stats import summary
from harness.mas.roster import Roster
from harness.synth.mcts import Node, Tree


def action_type(node: Node) -> str:
    """What kind of action an utterance was: a closing answer, a rewrite, or a turn said afresh."""
    return "closing" if node.utterance.closing else node.action


class NodeCredit:
    def __init__(self, coach: Coach, cfg: SynthConfig, roster: Roster):
        self.coach, self.cfg, self.roster = coach, cfg, roster
        self.reported = dict(coach.spent)  # what `cost` last reported

    @classmethod
    def build(cls, cfg: SynthConfig, roster: Roster) -> "NodeCredit":
        return cls(CREDITS.get(cfg.credit).build(cfg), cfg, roster)

    def action(self, tree: Tree, node: Node) -> Action:
        """The coach's view of a node: its speaker's memory before it (the prompt its pairs have)."""
        at = tree.dialogue(tree.turn_parent(node.id), key="", max_turns=self.cfg.max_turns,
                           closing_turn=self.cfg.closing_turn)
        at.closing = node.utterance.closing
        agent = self.roster.names.index(node.utterance.speaker)
        return Action(node.utterance.speaker, self.roster.agents[agent].role, at.messages(agent), node.text,
                      " / ".join(tree.question.golds))

    def score(self, trees: list[Tree]) -> None:
        """Scores every utterance of the trees that has none yet, in one coach call."""
        todo = [(tree, node) for tree in trees for node in tree.nodes[1:] if node.id not in tree.credit]
        for (tree, node), s in zip(todo, self.coach.score([self.action(tree, node) for tree, node in todo])):
            tree.credit[node.id] = {"score": s.score, "parsed": s.parsed}

    def values(self, tree: Tree, path: list[Node]) -> dict[int, float]:
        """Each node's value from one rollout through `path` (the root first): its own credit."""
        values = {n.id: tree.credit[n.id]["score"] / 10 for n in path[1:]}
        values[path[0].id] = statistics.fmean(values.values()) if values else 0.0
        return values

    def cost(self) -> dict:
        """What the coach spent since the last call (a batch's share), as flat `coach_*` cost keys, so
        the stage's cost record and the reports' ledger carry them."""
        now = dict(self.coach.spent)
        out = {f"coach_{k}": now[k] - self.reported[k] for k in now}
        self.reported = now
        return out

    def info(self) -> dict:
        return self.coach.info()

    def record(self, trees: list[Tree]) -> dict:
        """credit.json: the coach, its figures, and every scored utterance with its outcomes."""
        rows = []
        for tree in trees:
            outcomes: dict[int, list[tuple[float, float]]] = {}
            for r in tree.rollouts:
                for node in tree.path(r["leaf"]):
                    outcomes.setdefault(node.id, []).append((r["total"], r["task"]))
            for node_id, c in sorted(tree.credit.items()):
                node = tree.nodes[node_id]
                seen = outcomes.get(node_id, [])
                rows.append({"tree_id": tree.tree_id, "node": node_id, "agent": node.utterance.speaker,
                             "action": action_type(node), "model": node.model, "score": c["score"],
                             "parsed": c["parsed"],
                             "reward": statistics.fmean(t for t, _ in seen) if seen else None,
                             "correct": statistics.fmean(k for _, k in seen) if seen else None})
        return {"coach": self.info(), "summary": summary(rows), "spent": dict(self.coach.spent), "actions": rows}
