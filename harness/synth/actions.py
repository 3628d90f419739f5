"""TOA's tree actions over a roster's dialogues: which model acts next, and how (TOA, arXiv 2412.17061,
code oceanypt/TOA, read for behaviour).

TOA grows one tree per input over several models' responses: a response node's children are one
node per model, each an action (that model writes a response afresh, or refines the response above
it), chosen by UCB over the actions' mean rewards and backed up like any node. Here a node is one
utterance of a dialogue, and an action at a node is `(model, generate)`: that model says the next
turn, or `(model, refine)`: that model rewrites the node's own utterance, which another model wrote
(the rewrite says the same turn: `harness.synth.mcts`, refine nodes). A frozen speaker's turn has one
action, its own model's, and is never rewritten.

Selection descends from the root as TOA's does: at a node with fewer than `width` children (the
alternatives TOA's width bounds; actions already chosen this iteration count) the best action by
UCB is taken there; otherwise the descent moves to the best by UCB of the `topk` children with the
best Q. An action's UCB is sigmoid(Q / tau) + alpha * sqrt(2 ln(N + 1) / (visits + 1)) as TOA's
(N the tree's rollouts; its visits start at one), with the actions chosen this iteration and not
yet backed up counted as visits. An action never taken at a node takes the mean of that model's
actions of that kind anywhere in the tree (TOA copies the root's model nodes' statistics to new
ones), and +inf where the tree has none yet, so each model and kind is tried once early.

Departures from TOA, for dialogues: values are the dialogue's (Optima's reward of the rollout
through the node, or a coach's credit), not a reward model's score of one response; a refine node's
value counts towards the dialogue it belongs to, not its draft's; width is per node, where TOA's
counts a whole layer of its single-turn tree; refine actions are other models' only (TOA also lets a
model refine itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from harness.synth.mcts import Node, Tree

KINDS = ("generate", "refine")


@dataclass(frozen=True)
class Action:
    node: int  # where it is taken: the node whose next turn it says, or whose utterance it rewrites
    model: str
    kind: str  # "generate" | "refine"

    @property
    def key(self) -> tuple[int, str, str]:
        return self.node, self.model, self.kind


@dataclass(frozen=True)
class ToaRule:
    models: tuple[str, ...]  # the acting models, the policy first
    width: int = 3  # a node takes actions until it has this many children
    topk: int = 1  # the descent considers this many children with the best Q (TOA's topk_child)
    alpha: float = 0.01  # UCB's exploration weight (TOA's alpha)
    tau: float = 1.0  # values are squashed by sigmoid(value / tau) in UCB (TOA's tau, for rewards of scale 1)


def speaker_of(tree: Tree, node: Node):
    """The agent who said a node's utterance."""
    return tree.roster.agents[tree.roster.names.index(node.utterance.speaker)]


def actions_at(tree: Tree, node: Node, rule: ToaRule, done: bool) -> list[Action]:
    """The actions open at a node: each model's next turn (the frozen speaker's own model, where one
    speaks next) unless the dialogue ended there, and each other model's rewrite of the node's
    utterance where the policy's agents said it."""
    out = []
    if not done:
        agent = tree.roster.agents[tree.next_agent(node)]
        models = (agent.model,) if agent.frozen else rule.models
        out += [Action(node.id, m, "generate") for m in models]
    if node.utterance is not None and not speaker_of(tree, node).frozen:
        out += [Action(node.id, m, "refine") for m in rule.models if m != node.model]
    return out


def squash(value: float, tau: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(value / tau, 700.0), -700.0)))


def priors(tree: Tree) -> dict[tuple[str, str], float]:
    """Each (model, kind)'s mean value over every node where it was taken."""
    sums: dict[tuple[str, str], list[float]] = {}
    for (_, model, kind), (visits, q) in tree.edges.items():
        total = sums.setdefault((model, kind), [0.0, 0.0])
        total[0] += visits * q
        total[1] += visits
    return {k: s / n for k, (s, n) in sums.items() if n}


def action_value(tree: Tree, action: Action, pending: dict, rule: ToaRule, prior: dict) -> float:
    visits, q = tree.edges.get(action.key, (0, 0.0))
    waiting = pending.get(action.key, 0)
    if visits:
        mean = q
    elif (action.model, action.kind) in prior:
        mean = prior[(action.model, action.kind)]
    elif waiting:  # tried nowhere yet, but chosen this iteration: neutral until its value is known
        mean = 0.0
    else:
        return math.inf
    return squash(mean, rule.tau) + explore(tree, visits + waiting, rule)


def explore(tree: Tree, visits: int, rule: ToaRule) -> float:
    return rule.alpha * math.sqrt(2 * math.log(tree.nodes[0].visits + 1) / (visits + 1))


def choose(tree: Tree, rule: ToaRule, pending: dict, done: Callable[[Node], bool]) -> Action:
    """The next action of a tree (TOA's selection over this tree's actions); counts it in `pending`
    (the actions chosen this iteration, not yet backed up: a dict the caller starts empty)."""
    prior = priors(tree)
    node = tree.nodes[0]
    while True:
        acts = actions_at(tree, node, rule, done(node))
        waiting = sum(n for (at, *_), n in pending.items() if at == node.id)
        open_children = [tree.nodes[c] for c in node.children if actions_at(tree, tree.nodes[c], rule,
                                                                            done(tree.nodes[c]))]
        if acts and (len(node.children) + waiting < rule.width or not open_children):
            action = max(acts, key=lambda a: action_value(tree, a, pending, rule, prior))  # first of equals
            pending[action.key] = pending.get(action.key, 0) + 1
            return action
        best = sorted(open_children, key=lambda n: -n.q)[:rule.topk]
        node = max(best, key=lambda n: squash(n.q, rule.tau) + explore(tree, n.visits, rule))
