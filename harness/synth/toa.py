"""TOA's search over dialogues (`synth.method=toa`, `synth.models`): several models act in one tree.

Each iteration takes `expand_time` actions per tree (`harness.synth.actions.choose`: which model,
and whether it says the next turn or rewrites the node's utterance); each action's utterance is one
request to its model, all the batch's requests one call per model; every rollout then runs to the
end of its dialogue with the roster's speakers (the policy for its agents, a frozen speaker's own
model for it), as Optima's rollouts do, and its utterances join the tree. Every utterance records
the model that wrote it. The reward of the rollout (or each utterance's coach credit, `synth.credit`)
is backed up along the dialogue's nodes and the actions that made them. The run's model is the
policy: its agents' turns become pairs whoever wrote them, so the other models' utterances enter
its training off-policy, and each pair says who wrote each side.

A rewrite is asked of the model as the agent's own memory with the draft and `REFINE` added to its
last message (the closing instruction's way, so roles still alternate); the pair's prompt is the
memory alone, so DPO learns to say the better turn, not to rewrite.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace

from harness.backends.base import Backend, Request, Sampling
from harness.mas.dialogue import Dialogue, Utterance, choose as choose_answers, run_dialogues
from harness.mas.scoring import dialogue_score
from harness.mas.speakers import Speakers
from harness.records.cost import spent
from harness.seeding import derive_seed
from harness.synth.actions import Action, ToaRule, choose
from harness.synth.mcts import Node, Tree
from harness.synth.reward import reward
from harness.synth.synthesis import Search

REFINE = ("A draft of your next message follows. Rewrite it into a better message for this conversation "
          "(keep your name tag and the answer format); reply with the rewritten message only.\n\nDraft:\n{draft}")


def with_draft(messages: list[dict], draft: str) -> list[dict]:
    """The memory with the refine instruction and the draft added to its last message."""
    last = messages[-1]
    return messages[:-1] + [{**last, "content": f"{last['content']}\n\n{REFINE.format(draft=draft)}"}]


class ToaSearch(Search):
    """Optima's batches, seeds, records and resume (`Search.run`), with TOA's actions in each tree."""

    def __init__(self, *args, actors: dict[str, Backend], **kwargs):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.rule = ToaRule(tuple(actors), cfg.toa_width, cfg.toa_topk, cfg.toa_alpha, cfg.toa_tau)
        # Each model speaks for the policy's agents in its own actions; frozen speakers keep their models.
        self.actors = {m: Speakers(b, self.speakers.frozen) for m, b in actors.items()}

    def model_of(self, speaker: str) -> str:
        """The model that speaks for an agent in a rollout's continuation."""
        agent = self.roster.agents[self.roster.names.index(speaker)]
        return agent.model if agent.frozen else self.cfg.model

    def grow(self, questions, batch: int, bar) -> list[dict]:
        cfg = self.cfg
        self.nll = {}  # as Optima's: shared within a batch only
        backends = {id(b): b for s in (self.speakers, *self.actors.values()) for b in s.backends()}
        before, started = {k: b.usage.as_dict() for k, b in backends.items()}, time.time()
        scorer_before = self.scorer.usage.as_dict() if id(self.scorer) not in backends else None
        trees = [Tree(self.tree_id(q), q, self.roster, self.roster.system_prompts(q),
                      random.Random(derive_seed(cfg.seed, "select", self.tree_id(q)))) for q in questions]
        ended: dict[tuple[str, int], bool] = {}

        def done(tree: Tree, node: Node) -> bool:
            key = (tree.tree_id, node.id)
            if key not in ended:
                ended[key] = tree.dialogue(node.id, "", cfg.max_turns, cfg.closing_turn).done
            return ended[key]

        for iteration in range(cfg.explore_time):
            rollouts = []  # (tree, action, dialogue, utterances said before the action)
            for t, tree in enumerate(trees):
                pending: dict = {}
                for j in range(cfg.expand_time):
                    action = choose(tree, self.rule, pending, lambda n, tree=tree: done(tree, n))
                    tree.selected.append(action.node)
                    base = tree.turn_parent(action.node) if action.kind == "refine" else action.node
                    d = tree.dialogue(base, f"b{batch}t{t}r{j}", cfg.max_turns, cfg.closing_turn)
                    rollouts.append((tree, action, d, len(d.utterances)))
            seed = derive_seed(cfg.seed, "search", batch, iteration)
            self.act([(tree, a, d) for tree, a, d, _ in rollouts], derive_seed(seed, "actions"))
            dialogues = [d for _, _, d, _ in rollouts]
            run_dialogues(dialogues, self.speakers, self.dialogue_cfg, seed, bar, release=False)
            self.score_utterances(dialogues)
            grown = []
            for tree, action, d, start in rollouts:
                node = tree.add(action.node, d.utterances[start], cfg.merge_distance, action.model, action.kind)
                said = [(node, action.model)]
                for u in d.utterances[start + 1:]:
                    said.append((tree.add(said[-1][0].id, u, cfg.merge_distance, self.model_of(u.speaker)),
                                 self.model_of(u.speaker)))
                r = reward(dialogue_score(d, self.metric, self.tokenizer), d.utterances,
                           [self.nll[u.text] for u in d.utterances], self.reward_cfg, self.roster.names)
                grown.append((tree, action, said, r))
                tree.rollouts.append({"iteration": iteration, "from": action.node, "leaf": said[-1][0].id,
                                      "action": {"model": action.model, "kind": action.kind},
                                      "models": [m for _, m in said], "answer": d.final_answer, "stop": d.stop,
                                      **r.as_dict()})
            if self.credit is not None:
                self.credit.score(trees)
            for tree, action, said, r in grown:
                self.backup(tree, action, said, r.total)
        for t in range(len(trees)):
            for speakers in (self.speakers, *self.actors.values()):
                speakers.release(f"b{batch}t{t}r")
        cost = self.batch_cost(backends, before, started, trees)
        if scorer_before is not None:
            cost["scored_tokens"] = self.scorer.usage.scored_tokens - scorer_before["scored_tokens"]
        return [tree.to_record() | {"batch": batch, "batch_cost": cost} for tree in trees]

    def act(self, rollouts: list[tuple[Tree, Action, Dialogue]], seed: int) -> None:
        """Each action's utterance, added to its rollout's dialogue: one call per acting model, each
        request with the sampling seed it has in one call over all of them (as `Speakers.generate`)."""
        requests, speakers = [], []
        for tree, action, d in rollouts:
            a = d.next_agent
            messages = d.messages(a)
            if action.kind == "refine":
                messages = with_draft(messages, tree.nodes[action.node].text)
            requests.append(Request(messages, cache_key=d.cache_key(a), adapter=d.adapter_of(a)))
            speakers.append(self.speakers if d.roster.agents[a].frozen else self.actors[action.model])
        seeds = Backend.sample_seeds(requests, seed)
        sampling = Sampling(temperature=self.dialogue_cfg.temperature, top_p=self.dialogue_cfg.top_p,
                            max_new_tokens=self.dialogue_cfg.max_new_tokens)
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(speakers):
            groups.setdefault(id(s), []).append(i)
        for rows in groups.values():
            spk = speakers[rows[0]]
            ds = [rollouts[i][2] for i in rows]
            agents = [d.next_agent for d in ds]
            completions = spk.generate([d.roster.agents[a] for d, a in zip(ds, agents)],
                                       [replace(requests[i], seed=seeds[i]) for i in rows], sampling, seed)
            said = [Utterance.from_completion(d.roster.agents[a].name, c, d.closing)
                    for d, a, c in zip(ds, agents, completions)]
            if self.dialogue_cfg.answer_mode == "choice":
                choose_answers(ds, agents, said, spk)
            for d, u in zip(ds, said):
                d.add(u, self.dialogue_cfg.max_turns, self.dialogue_cfg.closing_turn)

    def backup(self, tree: Tree, action: Action, said: list[tuple[Node, str]], total: float) -> None:
        """The rollout's values along its dialogue's nodes (the root included) and the actions that made
        them: the action taken, then each later turn's model's `generate` at its parent."""
        leaf = said[-1][0]
        path = [tree.nodes[0], *tree.path(leaf.id)]
        values = self.credit.values(tree, path) if self.credit is not None else {n.id: total for n in path}
        tree.backup_values(values)
        spoken = {node.id: model for node, model in said}
        for node in path[1:]:
            if node.id == said[0][0].id:
                tree.record_edge(action.node, action.model, action.kind, values[node.id])
            else:
                tree.record_edge(node.parent, spoken.get(node.id, node.model), node.action, values[node.id])

    def batch_cost(self, backends: dict, before: dict, started: float, trees: list[Tree]) -> dict:
        """The batch's cost: the policy's usage as Optima's search records it, and per acting model its
        actions, the utterances it wrote and the tokens its engine spent (`by_model`; the policy's
        tokens are its whole usage above)."""
        cfg = self.cfg
        policy = self.backend
        cost = spent(before[id(policy)], policy.usage.as_dict()) | {
            "wall_seconds": time.time() - started, "rollouts": len(trees) * cfg.explore_time * cfg.expand_time}
        by_model = {m: {"actions": 0, "utterances": 0} for m in self.actors}
        for tree in trees:
            for r in tree.rollouts:
                by_model[r["action"]["model"]]["actions"] += 1
                for m in r["models"]:
                    by_model.setdefault(m, {"actions": 0, "utterances": 0})["utterances"] += 1
        others = {"offpolicy_actions": 0, "offpolicy_prompt_tokens": 0, "offpolicy_completion_tokens": 0}
        for model, speakers in self.actors.items():
            b = speakers.policy
            if b is not policy:
                used = spent(before[id(b)], b.usage.as_dict())
                by_model[model] |= {"prompt_tokens": used["prompt_tokens"],
                                    "completion_tokens": used["completion_tokens"]}
                others["offpolicy_actions"] += by_model[model]["actions"]
                others["offpolicy_prompt_tokens"] += used["prompt_tokens"]
                others["offpolicy_completion_tokens"] += used["completion_tokens"]
        # Flat totals of the other models beside the per-model detail: the stage's cost record keeps numbers only.
        cost |= others | {"by_model": by_model}
        if self.credit is not None:
            cost |= self.credit.cost()
        return cost
