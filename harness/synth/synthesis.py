"""`harness synth`: the probe, one search tree per training question, and the preference pairs.

Rollouts of a batch of trees (`trees_per_batch`) advance together: each turn of all their rollouts
is one batched generate call, and each rollout keeps its cache slots across iterations, so its next
rollout re-encodes only the path past what the slot already holds. Trees are written as their
batch finishes, so a killed run resumes (`resume=True`) from the trees already grown; pairs are
extracted at the end from the written trees, the same way for grown and resumed ones. With
`influence_weight` > 0 the influence screen (`harness.screen`, on the policy against validation
questions) scores the nodes' pairs before each selection (`harness.synth.guidance`).

`method` names the search (`METHODS`): `optima` (this module's `Search`, the default) or `toa`
(several models act in each tree, `harness.synth.toa`). `credit=mappa` makes each node's value its
utterance's coach credit instead of the rollout's reward (`harness.synth.credit`).
"""

from __future__ import annotations

import dataclasses

import json
import logging
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from harness import config as cfgmod
from harness import machine, models, runs
from harness.backends import make_backend
from harness.backends.base import Backend
from harness.config import InfluenceConfig, RuntimeConfig, SelectConfig, SynthConfig
from harness.errors import HarnessError
from harness.mas.dialogue import DialogueConfig, run_dialogues, start
from harness.mas.progress import UtteranceBar
from harness.mas.roster import Roster, task_and_roster
from harness.mas.scoring import dialogue_score
from harness.mas.speakers import Speakers
from harness.records import chaos, spec
from harness.records.cost import spent, summed
from harness.registry import Registry
from harness.seeding import derive_seed, seed_everything
from harness.synth.guidance import NodeInfluence, refresh_estimates
from harness.synth.mcts import Tree
from harness.synth.pairs import PairRule, extract_pairs
from harness.synth.reward import RewardConfig, reward, reward_config
from harness.tasks import TASKS
from harness.tasks.base import Question, Task
from harness.tasks.metrics import METRICS

log = logging.getLogger(__name__)

# The tree searches `synth.method` names: a `Search` subclass each.
METHODS: Registry = Registry("search method")
METHODS.register("optima", "harness.synth.synthesis:Search")
METHODS.register("toa", "harness.synth.toa:ToaSearch")


@dataclass
class SynthResult:
    run_dir: Path
    run_spec: dict
    summary: dict
    cost: dict
    pairs: list[dict]


def synthesize(config: SynthConfig | None = None, resume: bool = False, **overrides) -> SynthResult:
    """Python API of `harness synth`: returns what it writes. Overrides are config keys."""
    cfg = cfgmod.build(SynthConfig, overrides={**cfgmod.as_dict(config or SynthConfig()), **overrides})
    task, roster = task_and_roster(cfg)
    cfg = dataclasses.replace(cfg, answer_mode=task.answer_mode(cfg.answer_mode))
    metric = cfg.metric or task.metric
    METRICS.get(metric)
    for model in (cfg.model, *roster.frozen_models, *acting_models(cfg)[1:]):
        models.check(model)
    METHODS.get(cfg.method)
    recipe = TASKS.get(cfg.task).recipe
    rule = PairRule(cfg.dpo_epsilon if cfg.dpo_epsilon is not None else recipe.dpo_epsilon,
                    cfg.dpo_min_gap, cfg.keep_fraction)
    if not 0 < cfg.keep_fraction <= 1:
        raise HarnessError(f"keep_fraction must be in (0, 1], got {cfg.keep_fraction}")
    if cfg.influence_weight < 0:
        raise HarnessError(f"influence_weight must be at least 0, got {cfg.influence_weight}")
    check_method(cfg, roster)

    rows = task.load(cfg.split, cfg.data_dir, None, cfg.online)
    end = cfg.question_offset + cfg.questions
    pool = rows[cfg.question_offset:end]
    if not pool:
        raise HarnessError(f"{cfg.task}/{cfg.split} has {len(rows)} questions: none at offset {cfg.question_offset}")
    probe_pool = [] if cfg.t_norm else rows[end:end + cfg.probe_size]
    if not cfg.t_norm and not probe_pool:
        raise HarnessError(f"{cfg.task}/{cfg.split}: no questions left after the trees' for the probe "
                           f"({len(rows)} in all); lower --questions or set t_norm")
    # A pool with no evidence at all (TriviaQA rows without search results) runs closed-book, said in
    # the record; within a pool that has evidence, a question missing an agent's slot is skipped.
    closed_book = roster.slots > 0 and not any(any(q.contexts) for q in pool)
    if closed_book:
        log.warning("%s/%s: no question in the pool has any context; the agents answer closed-book",
                    cfg.task, cfg.split)
    skipped = [] if closed_book else [q.id for q in pool if roster.slots and not all(q.contexts)]
    for qid in skipped:
        log.warning("%s/%s question %s: an agent's context is empty; no tree grown", cfg.task, cfg.split, qid)
    pool = [q for q in pool if q.id not in skipped]
    node_influence = influence_screen(cfg, task, pool) if cfg.influence_weight else None

    rid = runs.run_id("synth", task=cfg.task, model=cfg.model, split=cfg.split, seed=cfg.seed,
                      questions=f"{cfg.question_offset}-{end}", explore=cfg.explore_time, expand=cfg.expand_time,
                      influence=cfg.influence_weight or None,  # Optima's search keeps its ids
                      method=None if cfg.method == "optima" else cfg.method, credit=cfg.credit)
    out = Path(cfg.out) if cfg.out else Path("runs") / "synth" / runs.dir_name(rid)
    seed_everything(cfg.seed)
    started = time.time()
    backend = make_backend(cfg)
    scorer = backend if cfg.reward_model in (None, cfg.model) else make_backend(cfg, model=cfg.reward_model)
    tokenizer = backend.tokenizer
    speakers = Speakers.for_roster(roster, backend, lambda model: make_backend(cfg, model=model), cfg.model)
    extra = {}
    if cfg.method == "toa":  # each acting model's backend: the policy's, a frozen speaker's, or its own
        extra["actors"] = {m: backend if m == cfg.model else speakers.frozen.get(m) or make_backend(cfg, model=m)
                           for m in acting_models(cfg)}
    credit = node_credit(cfg, roster) if cfg.credit else None

    with runs.resumable_directory(out, resume) as tmp:
        probed = probe(tmp / "probe.json", probe_pool, roster, speakers, cfg)
        reward_cfg = reward_config(cfg, probed["t_norm"])
        search = METHODS.get(cfg.method)(cfg, speakers, scorer, reward_cfg, metric, tokenizer, roster, node_influence,
                                         credit=credit, **extra)
        records = search.run(pool, tmp / "trees.jsonl")
        trees = [Tree.from_record(r, q, roster, roster.system_prompts(q)) for r, q in zip(records, pool)]
        policy = {"name": cfg.model, "sha256": backend.model_info.get("sha256")}
        pairs = []
        for tree in trees:
            found = extract_pairs(tree, rule)
            if not found:
                log.warning("tree %s: no node has children far enough apart in Q for a pair", tree.tree_id)
            pairs += [{**p, "task": cfg.task, "policy": policy, "seed": cfg.seed, "answer_mode": cfg.answer_mode,
                       "closing_turn": cfg.closing_turn, "roster": roster.name, "speaker_models": cfg.speaker_models}
                      for p in found]
        wall = time.time() - started

        batch_costs = {r["batch"]: r["batch_cost"] for r in records}
        # Every key any batch recorded: a run resumed with the response cache on or off has batches with
        # and without its counts.
        search_cost = summed(list(batch_costs.values()))
        cost = {"probe": probed["cost"], "search": search_cost,
                "rollouts": search_cost["rollouts"], "wall_seconds_this_process": wall,
                "resumed_trees": search.resumed}
        summary = _summary(cfg, trees, pairs, skipped, probed, search_cost)
        if cfg.method == "toa":
            summary["models"] = model_summary(trees, pairs)
        credit_record = credit.record(trees) if credit is not None else None
        run_spec = spec.run_spec(
            "synth", rid, cfgmod.as_dict(cfg), cfg.seed, device=machine.device_info(cfg.device),
            policy=backend.model_info, frozen_speakers=speakers.frozen_info(), reward_model=scorer.model_info,
            **({"acting_models": {m: b.model_info for m, b in extra["actors"].items()}} if extra else {}),
            **({"coach": credit.info()} if credit is not None else {}),
            reward=vars(reward_cfg), pair_rule=vars(rule), metric=metric, setting=task.setting,
            closed_book=closed_book,
            data={"source": task.source, "tree_question_ids": [q.id for q in pool],
                  "probe_question_ids": [q.id for q in probe_pool], "skipped_question_ids": skipped})
        runs.write_jsonl(tmp / "pairs.jsonl", pairs)
        runs.write_json(tmp / "cost.json", cost)
        runs.write_json(tmp / "summary.json", summary)
        if credit_record is not None:
            runs.write_json(tmp / "credit.json", credit_record)
        runs.write_json(tmp / "run_spec.json", run_spec)
    return SynthResult(out, run_spec, summary, cost, pairs)


def acting_models(cfg: SynthConfig) -> list[str]:
    """TOA's acting models: the policy (`model`) first, then each other model of `models`."""
    named = [m.strip() for m in (cfg.models or "").split(",") if m.strip()]
    return list(dict.fromkeys([cfg.model, *named]))


def check_method(cfg: SynthConfig, roster: Roster) -> None:
    """One line for search settings that cannot work together (the method's, the credit's)."""
    if cfg.credit:
        from harness.credit.coach import CREDITS

        CREDITS.get(cfg.credit)
        if not cfg.coach:
            raise HarnessError(f"credit={cfg.credit} needs a coach model: set coach=MODEL (--coach)")
    if cfg.method != "toa":
        if cfg.models:
            raise HarnessError(f"synth.models={cfg.models!r} names models for TOA's search; set method=toa "
                               f"(method is {cfg.method!r})")
        return
    if len(acting_models(cfg)) < 2:
        raise HarnessError(f"method=toa needs two or more models: synth.models names the others beside the "
                           f"policy {cfg.model!r} (got {cfg.models!r})")
    if cfg.influence_weight:
        raise HarnessError("method=toa selects by its actions' UCB: influence_weight applies to Optima's search only")
    if roster.web is not None:
        raise HarnessError(f"method=toa does not run web rosters ({roster.name}): their episodes act between turns")


def node_credit(cfg: SynthConfig, roster: Roster):
    """The coach's credit as node values (`synth.credit`); the coach's engine loads only when asked for."""
    from harness.synth.credit import NodeCredit

    return NodeCredit.build(cfg, roster)


def model_summary(trees: list[Tree], pairs: list[dict]) -> dict:
    """Per acting model: the actions it took (by kind), the utterances it wrote, the pairs' sides it wrote."""
    out: dict[str, dict] = {}

    def row(model: str) -> dict:
        return out.setdefault(model, {"generate": 0, "refine": 0, "utterances": 0, "chosen": 0, "rejected": 0})

    for tree in trees:
        for r in tree.rollouts:
            row(r["action"]["model"])[r["action"]["kind"]] += 1
            for m in r["models"]:
                row(m)["utterances"] += 1
    for p in pairs:
        row(p["chosen_model"])["chosen"] += 1
        row(p["rejected_model"])["rejected"] += 1
    return out


def influence_screen(cfg: SynthConfig, task: Task, pool: list[Question]) -> NodeInfluence:
    """The influence screen's pair scorer on the policy, against validation questions disjoint from the trees'."""
    from harness.screen.first_order import InfluenceScreen

    validation = task.load(cfg.influence_val_split, cfg.data_dir, cfg.influence_validation_size, cfg.online)
    if not validation:
        raise HarnessError(f"{cfg.task}/{cfg.influence_val_split}: no validation questions for influence_weight")
    overlap = {q.id for q in pool} & {q.id for q in validation}
    if overlap:
        raise HarnessError(f"{len(overlap)} of the {len(validation)} {cfg.influence_val_split} questions are tree "
                           f"questions (e.g. {min(overlap)}); choose a disjoint influence_val_split")
    # The screen's step and validation knobs are the selection's defaults; its runtime is the search's.
    runtime = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RuntimeConfig)} | {"out": None}
    select_cfg = SelectConfig(**runtime, influence=InfluenceConfig(val_split=cfg.influence_val_split,
                                                                   validation_size=cfg.influence_validation_size))
    return InfluenceScreen.build(cfg.model, select_cfg, task, validation, cfg.answer_mode,
                                 cfg.closing_turn).score_pairs


def probe(path: Path, questions: list[Question], roster: Roster | str, speakers: Backend | Speakers,
          cfg: SynthConfig) -> dict:
    """T_norm: the `probe_percentile`-th percentile of the generated tokens of probe dialogues (of
    `start`'s roster, spoken by `run_dialogues`'s speakers); the cost is the policy's."""
    if cfg.t_norm:
        return {"t_norm": cfg.t_norm, "source": "config", "cost": {}}
    if path.exists():
        return json.loads(path.read_text())
    backend = Speakers.of(speakers).policy
    before, started = backend.usage.as_dict(), time.time()
    dialogue_cfg = DialogueConfig(cfg.max_turns, cfg.max_new_tokens, cfg.probe_temperature, cfg.top_p,
                                  answer_mode=cfg.answer_mode, closing_turn=cfg.closing_turn)
    with UtteranceBar(len(questions), dialogue_cfg.max_utterances, "probe") as bar:
        dialogues = run_dialogues(start(questions, roster), speakers, dialogue_cfg,
                                  derive_seed(cfg.seed, "probe"), bar)
    tokens = [sum(u.completion_tokens for u in d.utterances) for d in dialogues]
    result = {
        "t_norm": t_norm_of(tokens, cfg.probe_percentile), "source": "probe",
        "percentile": cfg.probe_percentile, "temperature": cfg.probe_temperature, "tokens": tokens,
        "question_ids": [q.id for q in questions],
        "cost": spent(before, backend.usage.as_dict()) | {"wall_seconds": time.time() - started},
    }
    runs.write_json(path, result)
    return result


def t_norm_of(tokens: list[int], percentile: float) -> int:
    """The token normaliser: a percentile of the dialogues' generated tokens, plus one."""
    return int(np.percentile(tokens, percentile)) + 1


class Search:
    """Grows the trees of a question pool, a batch of trees at a time, appending each batch's
    trees to a JSONL file; trees already there (from a killed run) are kept, not regrown."""

    def __init__(self, cfg: SynthConfig, speakers: Speakers, scorer: Backend, reward_cfg: RewardConfig,
                 metric: str, tokenizer, roster: Roster, node_influence: NodeInfluence | None = None, credit=None):
        self.cfg, self.speakers, self.backend, self.scorer = cfg, speakers, speakers.policy, scorer
        self.reward_cfg, self.metric, self.tokenizer, self.roster = reward_cfg, metric, tokenizer, roster
        self.node_influence = node_influence  # None: Optima's search, no estimates
        self.credit = credit  # None: nodes take the rollouts' rewards; else `harness.synth.credit.NodeCredit`
        self.dialogue_cfg = DialogueConfig(cfg.max_turns, cfg.max_new_tokens, cfg.rollout_temperature, cfg.top_p,
                                           answer_mode=cfg.answer_mode, closing_turn=cfg.closing_turn)
        self.nll: dict[str, float] = {}
        self.resumed = 0

    def run(self, pool: list[Question], path: Path) -> list[dict]:
        cfg = self.cfg
        size = cfg.trees_per_batch
        batches = [pool[i:i + size] for i in range(0, len(pool), size)]
        done = {r["tree_id"]: r for r in runs.read_complete_jsonl(path)}
        kept = [[done[self.tree_id(q)] for q in batch] for batch in batches
                if all(self.tree_id(q) in done for q in batch)]
        # A batch cut short by a kill is regrown whole, so every batch sees the seeds it would have.
        path.unlink(missing_ok=True)
        runs.append_jsonl(path, [r for batch in kept for r in batch])
        self.resumed = sum(map(len, kept))
        per_tree = cfg.explore_time * cfg.expand_time
        records = {r["tree_id"]: r for batch in kept for r in batch}
        with UtteranceBar(len(pool) * per_tree, self.dialogue_cfg.max_utterances, "tree search",
                          done=self.resumed * per_tree) as bar:
            for index, batch in enumerate(batches):
                if all(self.tree_id(q) in records for q in batch):
                    continue
                new = self.grow(batch, index, bar)
                runs.append_jsonl(path, new)
                chaos.checkpoint()  # a batch of trees is durable: the chaos test's seam
                records.update((r["tree_id"], r) for r in new)
        return [records[self.tree_id(q)] for q in pool]

    def tree_id(self, q: Question) -> str:
        return f"{self.cfg.task}:{q.id}"

    def grow(self, questions: list[Question], batch: int, bar) -> list[dict]:
        cfg, backend = self.cfg, self.backend
        # Utterance NLLs are shared within a batch only: a score depends (at float level, on some
        # CPUs) on the padded batch it was computed in, so one carried over from an earlier batch
        # would make a batch regrown after a kill differ from the uninterrupted run's.
        self.nll = {}
        before, started = backend.usage.as_dict(), time.time()
        scorer_before = self.scorer.usage.as_dict() if self.scorer is not backend else None
        trees = [Tree(self.tree_id(q), q, self.roster, self.roster.system_prompts(q),
                      random.Random(derive_seed(cfg.seed, "select", self.tree_id(q)))) for q in questions]
        estimated = 0
        for iteration in range(cfg.explore_time):
            if self.node_influence:  # the last iteration's backups changed some nodes' pairs
                estimated += refresh_estimates(trees, self.node_influence)
            rollouts = []
            for t, tree in enumerate(trees):
                node = tree.select(cfg.select_distance, cfg.select_top_k, cfg.influence_weight)
                # Slot keys per tree and rollout index, kept across iterations: the next rollout
                # on a key reuses the system prompt and whatever path it shares with the last.
                rollouts += [(tree, node, tree.dialogue(node.id, f"b{batch}t{t}r{j}", cfg.max_turns,
                                                             cfg.closing_turn))
                             for j in range(cfg.expand_time)]
            dialogues = [d for _, _, d in rollouts]
            run_dialogues(dialogues, self.speakers, self.dialogue_cfg,
                          derive_seed(cfg.seed, "search", batch, iteration), bar, release=False)
            self.score_utterances(dialogues)
            leaves = []
            for tree, node, d in rollouts:
                leaf = node
                for u in d.utterances[node.depth:]:
                    leaf = tree.add(leaf.id, u, cfg.merge_distance)
                r = reward(dialogue_score(d, self.metric, self.tokenizer), d.utterances,
                           [self.nll[u.text] for u in d.utterances], self.reward_cfg, self.roster.names)
                if self.credit is None:
                    tree.backup(leaf.id, r.total)
                else:  # the coach scores the batch's new utterances first, then each node takes its own
                    leaves.append((tree, leaf))
                tree.rollouts.append({"iteration": iteration, "from": node.id, "leaf": leaf.id,
                                      "answer": d.final_answer, "stop": d.stop, **r.as_dict()})
            if leaves:
                self.credit.score(trees)
                for tree, leaf in leaves:
                    tree.backup_values(self.credit.values(tree, [tree.nodes[0], *tree.path(leaf.id)]))
        for t in range(len(trees)):
            self.speakers.release(f"b{batch}t{t}r")
        cost = spent(before, backend.usage.as_dict()) | {
            "wall_seconds": time.time() - started, "rollouts": len(trees) * cfg.explore_time * cfg.expand_time}
        if self.node_influence:
            cost["node_estimates"] = estimated
        if self.credit is not None:
            cost |= self.credit.cost()
        if scorer_before is not None:
            cost["scored_tokens"] = self.scorer.usage.scored_tokens - scorer_before["scored_tokens"]
        return [tree.to_record() | {"batch": batch, "batch_cost": cost} for tree in trees]

    def score_utterances(self, dialogues) -> None:
        """The frozen model's NLL of every utterance not scored yet, in one batched call."""
        texts = list(dict.fromkeys(u.text for d in dialogues for u in d.utterances if u.text not in self.nll))
        if texts:
            self.nll.update(zip(texts, self.scorer.turn_nll(texts)))


def _summary(cfg: SynthConfig, trees: list[Tree], pairs: list[dict], skipped: list[str], probed: dict,
             search_cost: dict) -> dict:
    by_tree = {t.tree_id: 0 for t in trees}
    for p in pairs:
        by_tree[p["tree_id"]] += 1
    q_chosen = [p["q_chosen"] for p in pairs]
    q_rejected = [p["q_rejected"] for p in pairs]
    seconds = search_cost["wall_seconds"]
    return {
        "task": cfg.task, "trees": len(trees), "pairs": len(pairs),
        "pairs_per_question": len(pairs) / len(trees) if trees else 0.0,
        "trees_without_pairs": sum(n == 0 for n in by_tree.values()), "skipped_questions": len(skipped),
        "nodes": sum(len(t.nodes) for t in trees), "rollouts": search_cost["rollouts"],
        "rollouts_per_second": search_cost["rollouts"] / seconds if seconds else None,
        "t_norm": probed["t_norm"],
        "q_chosen": _distribution(q_chosen), "q_rejected": _distribution(q_rejected),
        "q_all_nodes": _distribution([n.q for t in trees for n in t.nodes[1:] if n.visits]),
    }


def _distribution(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    qs = np.percentile(values, [0, 25, 50, 75, 100]).tolist()
    return {"n": len(values), "mean": statistics.fmean(values), "min": qs[0], "p25": qs[1], "median": qs[2],
            "p75": qs[3], "max": qs[4]}


def summary_table(result: SynthResult) -> str:
    s = result.summary
    q = s["q_chosen"]
    row = [s["task"], s["trees"], s["pairs"], f"{s['pairs_per_question']:.2f}", s["trees_without_pairs"],
           s["skipped_questions"], s["rollouts"], f"{s['rollouts_per_second'] or 0:.2f}", s["t_norm"],
           f"{q['mean']:.3f}" if q["n"] else "-", f"{result.cost['wall_seconds_this_process']:.1f}"]
    headers = ["task", "trees", "pairs", "pairs/question", "trees without pairs", "skipped", "rollouts",
               "rollouts/s", "T_norm", "mean Q chosen", "wall s"]
    return tabulate([row], headers=headers, tablefmt="github")
