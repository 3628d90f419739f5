"""`harness run`: the self-training experiment, one stage at a time, each written before the next.

Per iteration: sft_data, sft, probe, mcts, select, dpo, eval (plus eval of the initial and the
SFT-only policy in iteration 0). A stage is finished when its directory exists under its final
name (every stage writes under a temporary name and renames), so a killed run resumes at the
first unfinished stage, and the tree search inside its stage from the trees already grown.

Runs of one suite with the same task, model, seed and pre-selection config share the stages
before the first selection: they live in ``runs/<suite>/shared/<key>/`` (key: a hash of that config
and the model's weights), so selector comparisons differ only by the selection and what follows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import config as cfgmod
from harness import models, runs
from harness.backends import BACKENDS
from harness.config import EvalConfig, RunConfig, SelectConfig, SynthConfig
from harness.errors import HarnessError
from harness.evaluation import evaluate
from harness.mas.dialogue import DialogueConfig
from harness.selection import SELECTORS, run_select
from harness.synth.reward import RECIPES, reward_config
from harness.synth.synthesis import derive_seed, probe, synthesize
from harness.train.sft_data import build_sft_data, sample_dialogues
from harness.train.trainers import (
    dpo_config,
    sft_config,
    train_dpo,
    train_sft,
    write_training,
)
from tasks import get_task
from tasks.base import read_jsonl
from tasks.metrics import METRICS

# Keys every stage must agree on: the run's values replace the sections'.
IDENTITY = ("task", "seed", "data_dir", "online", "backend", "device", "dtype", "context_mode", "metric",
            "max_turns", "kv_cache", "answer_mode", "closing_turn")
# Run keys that act only from the selection on: they do not change the shared stages.
SELECTION_KEYS = ("selector", "gamma", "alpha", "iterations", "suite", "out", "budget") + tuple(
    f.name for f in dataclasses.fields(RunConfig) if f.name.startswith("dpo_"))


@dataclass
class Plan:
    run: RunConfig
    synth: SynthConfig
    select: SelectConfig
    eval: EvalConfig
    run_id: str
    run_dir: Path
    shared_dir: Path
    key: str
    stages: list[Stage] = field(default_factory=list)

    def configs(self) -> dict:
        return {name: cfgmod.as_dict(getattr(self, name)) for name in ("run", "synth", "select", "eval")}


@dataclass
class Stage:
    name: str
    iteration: int | None  # None: the initial policy's evaluation
    path: Path
    shared: bool
    does: str  # one line for --dry-run
    run: Callable[[Path], None]

    @property
    def label(self) -> str:
        return self.name if self.iteration is None else f"it{self.iteration}/{self.name}"


def parse_selector(spec: str) -> tuple[str, list[str]]:
    """`dits:gamma=0,alpha=0.3` -> ("dits", ["gamma=0", "alpha=0.3"])."""
    name, _, rest = spec.partition(":")
    return name, [item for item in rest.split(",") if item]


def split_selectors(text: str) -> list[str]:
    """`random,dits:gamma=0,alpha=0.3,qvalue` -> ["random", "dits:gamma=0,alpha=0.3", "qvalue"]."""
    specs: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if "=" in item and ":" not in item and specs:
            specs[-1] += f",{item}"
        elif item:
            specs.append(item)
    return specs


def split_overrides(items: list[str] | None) -> dict[str, list[str]]:
    """Overrides by section: `synth.explore_time=4` goes to the synth config, `iterations=1` to run."""
    sections = {c.section: [] for c in cfgmod.CONFIG_CLASSES}
    out = {"": [], **sections}
    for item in items or []:
        head, dot, rest = item.partition(".")
        if dot and head in sections and "=" in rest:
            out[head].append(rest)
        elif dot and "=" not in head and head.isidentifier() and "=" in rest:
            raise HarnessError(f"override {item!r}: unknown section {head!r}; valid: {', '.join(sections)}")
        else:
            out[""].append(item)
    return out


def make_plan(file: str | None, overrides: list[str] | None = None, **flags) -> Plan:
    """Every config of a run, resolved and checked (trl's included) before any work."""
    sections = split_overrides(overrides)
    name, extra = parse_selector(flags.pop("selector", None) or "")
    run = cfgmod.build(RunConfig, file, sections["run"] + sections[""] + extra, selector=name or None, **flags)
    SELECTORS.get(run.selector)
    run = dataclasses.replace(run, answer_mode=get_task(run.task).answer_mode(run.answer_mode))
    identity = {k: getattr(run, k) for k in IDENTITY}

    def section(cls, **forced):
        built = cfgmod.build(cls, file, sections[cls.section])
        names = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(built, **{k: v for k, v in {**identity, **forced}.items() if k in names})

    synth = section(SynthConfig, model=run.model, question_offset=run.sft_questions, reward_model=run.model)
    select = section(SelectConfig, selector=run.selector)
    select = dataclasses.replace(select, gamma=select.gamma if run.gamma is None else run.gamma,
                                 alpha=select.alpha if run.alpha is None else run.alpha)
    evalc = section(EvalConfig, model=run.model, split="test", limit=run.test_questions, temperature=0.0)
    for key in ("iterations", "sft_questions", "sft_samples", "sft_epochs", "sft_batch_size", "dpo_batch_size",
                "sft_grad_accum", "dpo_grad_accum", "max_seq_length", "max_prompt_length"):
        if getattr(run, key) < 1:
            raise HarnessError(f"{key} must be at least 1, got {getattr(run, key)}")
    for key in ("sft_lr", "dpo_lr"):
        if not getattr(run, key) > 0:
            raise HarnessError(f"{key} must be positive, got {getattr(run, key)}")
    if not 0 <= run.warmup_ratio < 1:
        raise HarnessError(f"warmup_ratio must be in [0, 1), got {run.warmup_ratio}")
    if not 0 < run.sft_keep_fraction <= 1:
        raise HarnessError(f"sft_keep_fraction must be in (0, 1], got {run.sft_keep_fraction}")
    models.check(run.model)
    BACKENDS.get(run.backend)
    METRICS.get(run.metric or get_task(run.task, context_mode=run.context_mode).metric)
    # trl's configs check their arguments when built; a GPU profile is checked as the CPU one where
    # there is no GPU (trl refuses bf16 there), so a paper config validates on a laptop.
    import torch

    checked = run if torch.cuda.is_available() else dataclasses.replace(run, device="cpu", dtype="float32")
    scratch = Path("/nonexistent")
    try:
        sft_config(checked, scratch)
        dpo_config(checked, scratch)
    except (TypeError, ValueError) as e:
        raise HarnessError(f"trl rejects the training config: {e}") from None

    rid = runs.run_id("run", selector=run.selector, gamma=select.gamma if SELECTORS.get(run.selector).influence else None,
                      alpha=None if SELECTORS.get(run.selector).keeps_all else select.alpha, task=run.task,
                      model=run.model, seed=run.seed, iterations=run.iterations, answer=run.answer_mode,
                      budget=run.budget)
    root = Path(run.out) if run.out else Path("runs") / run.suite
    shared = {"run": {k: v for k, v in cfgmod.as_dict(run).items() if k not in SELECTION_KEYS},
              "synth": cfgmod.as_dict(synth), "eval": cfgmod.as_dict(evalc), "model": _model_identity(run.model)}
    key = hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:12]
    plan = Plan(run, synth, select, evalc, rid, root / runs.dir_name(rid), root / "shared" / key, key)
    plan.stages = Pipeline(plan).stages()
    return plan


def _model_identity(name: str) -> str:
    """A local directory's weights hash, a catalogue name with its recipe, or a hub id: no build
    or download needed."""
    path = Path(name).expanduser()
    if path.is_dir():
        return models.weights_hash(path)
    return f"{name}@{models.MODELS.get(name).recipe}" if name in models.MODELS else name


class Pipeline:
    """The stages of a plan, each a function of its output directory."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.task = get_task(plan.run.task, context_mode=plan.run.context_mode, seed=plan.run.seed)

    def stages(self) -> list[Stage]:
        p, run, synth = self.plan, self.plan.run, self.plan.synth
        initial = policy = run.model
        tests = "all" if run.test_questions is None else run.test_questions
        evaluated = f"{tests} greedy dialogues of up to {run.max_turns} x {self.plan.eval.max_new_tokens} tokens"
        out = [Stage("eval", None, p.shared_dir / "eval_initial", True, f"evaluate the initial policy: {evaluated}",
                     self.evaluate(initial, references=True))]
        sft_examples = 2 * int(run.sft_questions * run.sft_keep_fraction)
        sft_steps = math.ceil(sft_examples / (run.sft_batch_size * run.sft_grad_accum)) * run.sft_epochs
        rollouts = synth.questions * synth.explore_time * synth.expand_time
        for it in range(run.iterations):
            d = (p.shared_dir if it == 0 else p.run_dir) / f"it{it}"
            mine = p.run_dir / f"it{it}"
            sft_model = str(d / "sft" / "model")
            base = initial if run.sft_from_initial or it == 0 else policy
            out += [
                Stage("sft_data", it, d / "sft_data", it == 0,
                      f"{run.sft_questions} questions x {run.sft_samples} sampled dialogues of up to {run.max_turns} x "
                      f"{run.max_new_tokens} tokens; keep the best per question, top {run.sft_keep_fraction:.0%}",
                      self.sft_data(policy, it)),
                Stage("sft", it, d / "sft", it == 0,
                      f"LoRA SFT of {'the initial model' if base == initial else 'the last policy'}: at most "
                      f"{sft_examples} agent views, {sft_steps} optimizer steps", self.sft(base, d / "sft_data")),
            ]
            if it == 0:
                out.append(Stage("eval_sft", it, d / "eval_sft", True, f"evaluate the SFT-only policy: {evaluated}",
                                 self.evaluate(sft_model)))
            out += [
                Stage("probe", it, d / "probe", it == 0,
                      f"{synth.probe_size} sampled dialogues of up to {synth.max_turns} x {synth.max_new_tokens} "
                      "tokens -> T_norm", self.probe(sft_model, it)),
                Stage("mcts", it, d / "mcts", it == 0,
                      f"{synth.questions} trees, {rollouts} rollouts of up to {synth.max_turns} x "
                      f"{synth.max_new_tokens} tokens", self.mcts(sft_model, d / "probe", it)),
                Stage("select", it, mine / "select", False, self.select_line(), self.select(sft_model, d / "mcts")),
                Stage("dpo", it, mine / "dpo", False,
                      f"LoRA DPO on the selected pairs ({run.dpo_epochs} epoch(s), "
                      f"{run.dpo_batch_size * run.dpo_grad_accum} pairs a step)", self.dpo(sft_model, mine / "select")),
            ]
            policy = str(mine / "dpo" / "model")
            out.append(Stage("eval", it, mine / "eval", False, f"evaluate the DPO policy: {evaluated}",
                             self.evaluate(policy)))
        return out

    def select_line(self) -> str:
        s = self.plan.select
        selector = SELECTORS.get(s.selector)
        if selector.influence:
            scored = (f"{s.validation_size} greedy validation dialogues" if selector.kind == "metric" else
                      f"the DPO loss on up to {s.validation_size} validation pairs")
            return (f"{s.selector}: {s.warmup_steps} LoRA DPO warm-up steps, then per unit of {s.unit_size} pairs one "
                    f"step and {scored}; keep alpha={s.alpha}")
        return f"{s.selector}: keep {'every pair' if SELECTORS.get(s.selector).keeps_all else f'alpha={s.alpha}'}"

    # -- stages ------------------------------------------------------------------------------
    def evaluate(self, model: str, references: bool = False):
        # The reference rows are the initial policy's: the tables show no other policy's.
        return lambda out: evaluate(dataclasses.replace(self.plan.eval, model=model, out=str(out),
                                                        references=references))

    def backend(self, model: str):
        run = self.plan.run
        return BACKENDS.get(run.backend)(model=model, device=run.device, dtype=run.dtype,
                                        batch_size=run.batch_size, kv_cache=run.kv_cache)

    def sft_data(self, policy: str, iteration: int):
        def stage(out: Path) -> None:
            run, synth = self.plan.run, self.plan.synth
            lo, hi = pool_ranges(run, synth)[iteration]["sft"]
            questions = self.task.load("train", run.data_dir, None, run.online)[lo:hi]
            started = time.time()
            backend = self.backend(policy)
            scorer = backend if policy == run.model else self.backend(run.model)
            dialogue_cfg = DialogueConfig(run.max_turns, run.max_new_tokens, run.sft_temperature, synth.top_p,
                                          answer_mode=run.answer_mode, closing_turn=run.closing_turn)
            groups = sample_dialogues(questions, self.task.setting, backend, run.sft_samples, dialogue_cfg,
                                      derive_seed(run.seed, "sft_data", out.parent.name))
            texts = list(dict.fromkeys(u.text for g in groups for d in g for u in d.utterances))
            nll = dict(zip(texts, scorer.turn_nll(texts)))
            weights = reward_config(synth, 0)  # T_norm is set per question
            epsilon = run.sft_epsilon if run.sft_epsilon is not None else RECIPES[run.task].sft_epsilon
            metric = run.metric or self.task.metric
            examples, records = build_sft_data(groups, nll, weights, metric, backend.tokenizer,
                                               run.sft_keep_fraction, epsilon)
            if not examples:
                best = max(r["best_reward"]["total"] for r in records)
                raise HarnessError(f"SFT data: no question's best dialogue has reward >= sft_epsilon {epsilon} "
                                   f"(best {best:.3f} over {len(records)} questions); lower sft_epsilon or "
                                   "sample more (sft_samples)")
            stats = {"questions": len(records), "dialogues": sum(map(len, groups)),
                     "kept_questions": sum(r["kept"] for r in records), "examples": len(examples), "epsilon": epsilon,
                     "reward_weights": {k: v for k, v in vars(weights).items() if k != "t_norm"}, "metric": metric,
                     "policy": backend.model_info, "cost": backend.usage.as_dict() | {"wall_seconds": time.time() - started}}
            with runs.run_directory(out) as tmp:
                runs.write_jsonl(tmp / "sft_data.jsonl", examples)
                runs.write_jsonl(tmp / "questions.jsonl", records)
                runs.write_json(tmp / "stats.json", stats)
        return stage

    def sft(self, base: str, data: Path):
        def stage(out: Path) -> None:
            examples = [row for _, row in read_jsonl(data / "sft_data.jsonl")]
            write_training(out, lambda tmp: train_sft(base, examples, self.plan.run, tmp, str(out / "model")))
        return stage

    def probe(self, model: str, iteration: int):
        def stage(out: Path) -> None:
            rows = self.task.load("train", self.plan.run.data_dir, None, self.plan.run.online)
            lo, hi = pool_ranges(self.plan.run, self.plan.synth)[iteration]["probe"]
            with runs.run_directory(out) as tmp:
                probe(tmp / "probe.json", rows[lo:hi], self.task.setting, self.backend(model), self.plan.synth)
        return stage

    def mcts(self, model: str, probe_dir: Path, iteration: int):
        def stage(out: Path) -> None:
            t_norm = json.loads((probe_dir / "probe.json").read_text())["t_norm"]
            offset = pool_ranges(self.plan.run, self.plan.synth)[iteration]["mcts"][0]
            synthesize(dataclasses.replace(self.plan.synth, model=model, out=str(out), t_norm=t_norm,
                                           question_offset=offset), resume=True)
        return stage

    def select(self, model: str, mcts_dir: Path):
        def stage(out: Path) -> None:
            pairs = mcts_dir / "pairs.jsonl"
            if not pairs.read_text().strip():
                raise HarnessError(f"{mcts_dir}: the tree search yielded no pairs, so there is nothing to select "
                                   "(grow more trees: synth.questions, or lower synth.dpo_epsilon)")
            run_select(dataclasses.replace(self.plan.select, pairs=str(pairs), out=str(out), model=model))
        return stage

    def dpo(self, base: str, select_dir: Path):
        def stage(out: Path) -> None:
            pairs = [row for _, row in read_jsonl(select_dir / "selected.jsonl")]
            write_training(out, lambda tmp: train_dpo(base, pairs, self.plan.run, tmp, str(out / "model")))
        return stage


def pool_ranges(run: RunConfig, synth: SynthConfig) -> list[dict[str, tuple[int, int]]]:
    """Per iteration, the train rows [lo, hi) of its SFT, tree-search and probe pools: each iteration
    draws fresh questions after the last one's (as the reference's stateful loaders do)."""
    sizes = {"sft": run.sft_questions, "mcts": synth.questions, "probe": synth.probe_size}
    out, lo = [], 0
    for _ in range(run.iterations):
        ranges = {}
        for name, size in sizes.items():
            ranges[name] = (lo, lo + size)
            lo += size
        out.append(ranges)
    return out


def check_pools(plan: Plan) -> dict:
    """The question ids of every pool; fails when the splits cannot hold them disjointly."""
    run, synth, select = plan.run, plan.synth, plan.select
    task = get_task(run.task, context_mode=run.context_mode, seed=run.seed)
    train = task.load("train", run.data_dir, None, run.online)
    ranges = pool_ranges(run, synth)
    need = ranges[-1]["probe"][1]
    if len(train) < need:
        raise HarnessError(
            f"{run.task}/train has {len(train)} questions; the disjoint pools need {need} ({run.iterations} "
            f"iteration(s) x (sft_questions {run.sft_questions} + synth.questions {synth.questions} + "
            f"synth.probe_size {synth.probe_size})); lower them, or use more data (for CBT: harness data build-cbt)")
    pools = {(name if run.iterations == 1 else f"it{it}/{name}"): train[lo:hi]
             for it, by_name in enumerate(ranges) for name, (lo, hi) in by_name.items()}
    if SELECTORS.get(select.selector).influence:
        pools["influence_validation"] = task.load(select.val_split, run.data_dir, select.validation_size, run.online)
    pools["test"] = task.load("test", run.data_dir, run.test_questions, run.online)
    for name, pool in pools.items():
        if not pool:
            raise HarnessError(f"{run.task}: the {name} pool is empty")
    return {name: [q.id for q in pool] for name, pool in pools.items()} | {"source": task.source}


def execute(plan: Plan, resume: bool = False, progress=print) -> dict:
    """Run every unfinished stage of `plan`; returns the results record (also results.json)."""
    pools = check_pools(plan)
    spec_path = plan.run_dir / "run_spec.json"
    configs = plan.configs()
    if spec_path.exists():
        if not resume:
            raise HarnessError(f"{plan.run_dir} exists; --resume continues it (or remove it)")
        changed = _changed(json.loads(spec_path.read_text())["config"], configs)
        if changed:
            raise HarnessError(f"{plan.run_dir}: the config changed since the run started ({', '.join(changed)}); "
                               "resume with the same config, or start a new run")
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if not spec_path.exists():
        runs.write_json(spec_path, {
            "run_id": plan.run_id, "kind": "run", "config": configs, "seed": plan.run.seed,
            "shared_stages": str(plan.shared_dir), "shared_key": plan.key, "pools": pools,
            "stages": [{"stage": s.label, "path": str(s.path), "shared": s.shared} for s in plan.stages],
            "versions": runs.versions(), "device": runs.device_info(plan.run.device), "git_sha": runs.git_sha(),
            "command": sys.argv})
    for stage in plan.stages:
        if stage.path.is_dir():
            progress(f"[{stage.label}] done: {stage.path}")
            continue
        _status(plan, "running", stage.label)
        progress(f"[{stage.label}] {stage.does}")
        started = time.time()
        try:
            stage.run(stage.path)
        except BaseException:
            _status(plan, "failed", stage.label)
            raise
        ledger = (plan.shared_dir if stage.shared else plan.run_dir) / "ledger.jsonl"
        runs.append_jsonl(ledger, [{"stage": stage.label, "path": str(stage.path), "device": plan.run.device,
                                    "wall_seconds": time.time() - started, "finished": time.time(),
                                    "cost": stage_cost(stage.name, stage.path)}])
        progress(f"[{stage.label}] {headline(stage.name, stage.path)} ({time.time() - started:.0f} s)")
    results = collect(plan)
    runs.write_json(plan.run_dir / "results.json", results)
    _status(plan, "complete", None)
    return results


# Where each stage records its work: (file in the stage directory, key in it or None for the top).
COST_RECORDS = {"eval": ("cost.json", None), "eval_sft": ("cost.json", None), "sft_data": ("stats.json", "cost"),
                "sft": ("stats.json", None), "probe": ("probe.json", "cost"), "mcts": ("cost.json", "search"),
                "select": ("run_spec.json", None), "dpo": ("stats.json", None)}


def stage_cost(name: str, path: Path) -> dict:
    """The numbers a stage recorded about its work (tokens, requests, rollouts, steps, pairs, units)."""
    file, key = COST_RECORDS[name]
    record = json.loads((path / file).read_text())
    if name == "select":
        facts = record.get("selector_facts", {})
        units = len(facts.get("units", []))
        work = {"candidates": record["candidates"], "selected": record["selected"], "influence_units": units}
        if units:
            work |= {"warmup_steps": record["config"]["warmup_steps"],
                     "validation_dialogues": facts["validation_dialogues"],
                     "influence_seconds": sum(facts["seconds"].values()),
                     "reused_estimate": facts["reused_estimate"]}
            work |= {k: v for k, v in facts.get("usage", {}).items() if k.endswith("tokens")}
        return work
    record = record[key] if key else record
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _score_line(stats: dict) -> str:
    norm = f", acc_norm {stats['mean_norm']:.4f}" if "mean_norm" in stats else ""
    return (f"{stats['metric']} {stats['mean']:.4f} ± {stats['stderr']:.4f} over {stats['n']} questions{norm} "
            f"(answers: {stats.get('answer_mode', 'generate')}; answered {stats['answered_rate']:.0%})")


def _selection_line(spec: dict) -> str:
    line = f"kept {spec['selected']} of {spec['candidates']} pairs"
    res = spec.get("selector_facts", {}).get("resolution")
    if res:
        line += f"; influence: {res['distinct_values']} distinct values over {res['units']} units"
        if "split_half_spearman" in res:
            rho = res["split_half_spearman"]
            line += f", split-half Spearman {'-' if rho is None else f'{rho:+.2f}'}"
        if res.get("degenerate"):
            line += f", degenerate: {res['degenerate']}"
    return line


# Each stage's headline figure, printed when it ends: (the record it reads, the line from it).
HEADLINES = {
    "eval": ("stats.json", _score_line),
    "eval_sft": ("stats.json", _score_line),
    "sft_data": ("stats.json", lambda s: f"{s['examples']} SFT examples from {s['kept_questions']} of "
                                         f"{s['questions']} questions"),
    "sft": ("stats.json", lambda s: f"{s['steps']} steps on {s['examples']} examples, train loss {s['train_loss']:.4f}"),
    "probe": ("probe.json", lambda s: f"T_norm {s['t_norm']}"),
    "mcts": ("summary.json", lambda s: f"{s['pairs']} pairs from {s['trees']} trees "
                                       f"({s['trees_without_pairs']} without a pair)"),
    "select": ("run_spec.json", _selection_line),
    "dpo": ("stats.json", lambda s: f"{s['steps']} steps on {s['pairs']} pairs, train loss {s['train_loss']:.4f}"),
}


def headline(name: str, path: Path) -> str:
    file, line = HEADLINES[name]
    return line(json.loads((path / file).read_text()))


def _changed(old: dict, new: dict) -> list[str]:
    old = {section: cfgmod.recorded(section, old.get(section, {})) for section in new}
    return sorted(f"{section}.{k}" for section in new for k in new[section]
                  if old[section].get(k) != json.loads(json.dumps(new[section][k], default=str)))


def _status(plan: Plan, state: str, stage: str | None) -> None:
    with runs.atomic_file(plan.run_dir / "status.json") as tmp:
        runs.write_json(tmp, {"state": state, "stage": stage, "time": time.time()})


def collect(plan: Plan) -> dict:
    """Scores of every evaluated policy and wall seconds of every stage, from the stage records."""
    from harness.report.tables import versus

    walls = {}
    for ledger in (plan.shared_dir / "ledger.jsonl", plan.run_dir / "ledger.jsonl"):
        walls.update({row["stage"]: row["wall_seconds"] for row in runs.read_complete_jsonl(ledger)})
    rows, initial = [], {}
    for stage in plan.stages:
        if stage.name.startswith("eval"):
            stats = json.loads((stage.path / "stats.json").read_text())
            items = {r["id"]: r["score"] for r in runs.read_complete_jsonl(stage.path / "per_instance.jsonl")}
            policy = {"eval": "dpo", "eval_sft": "sft"}[stage.name] if stage.iteration is not None else "initial"
            if policy == "initial":
                initial = items
            # paired over the test items, with the MDD: whether training moved the policy at all
            rows.append({"policy": policy, "iteration": stage.iteration, "metric": stats["metric"],
                         "mean": stats["mean"], "stderr": stats["stderr"], "n": stats["n"],
                         "tokens_per_dialogue": stats["mean_tokens_per_dialogue"],
                         "answer_mode": stats.get("answer_mode", "generate"),
                         **({"references": stats["references"]} if "references" in stats else {}),
                         "vs_initial": None if policy == "initial" else versus([items], [initial])})
    counts, training = {}, {}
    for it in range(plan.run.iterations):
        mine = plan.run_dir / f"it{it}"
        spec = json.loads((mine / "select" / "run_spec.json").read_text())
        counts[f"it{it}"] = {"candidates": spec["candidates"], "selected": spec["selected"]}
        dpo = json.loads((mine / "dpo" / "stats.json").read_text())
        last = [r for r in runs.read_complete_jsonl(mine / "dpo" / "train_log.jsonl") if "rewards/margins" in r]
        training[f"it{it}"] = {"dpo_pairs": dpo["pairs"], "dpo_dropped_prompt_too_long": dpo["dropped_prompt_too_long"],
                               "dpo_train_loss": dpo["train_loss"], "dpo_steps": dpo["steps"],
                               **{f"last_{k}": last[-1][k] for k in ("rewards/margins", "rewards/accuracies")
                                  if last}}
    return {"run_id": plan.run_id, "selector": plan.run.selector, "task": plan.run.task, "seed": plan.run.seed,
            "scores": rows, "pairs": counts, "training": training, "wall_seconds": walls}
