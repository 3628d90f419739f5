"""A run's plan: every config resolved and checked before any work, its id and shared-stage key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from harness import config as cfgmod
from harness import models, runs
from harness.backends import BACKENDS
from harness.config import EvalConfig, RunConfig, SelectConfig, SynthConfig
from harness.credit.coach import CREDITS
from harness.errors import HarnessError
from harness.experiment.stages import Pipeline, Stage
from harness.mas.roster import task_and_roster
from harness.records.spec import EXECUTION_KEYS
from harness.selection import SELECTORS
from harness.synth.synthesis import METHODS
from harness.tasks import get_task
from harness.tasks.metrics import METRICS
from harness.train import launch
from harness.train.trainers import dpo_config, sft_config

# Keys every stage must agree on: the run's values replace the sections'.
IDENTITY = ("task", "seed", "data_dir", "online", "backend", "device", "dtype", "context_mode", "metric",
            "max_turns", "kv_cache", "answer_mode", "closing_turn", "roster", "speaker_models", "cache", "web")
# Run keys that act only from the selection on: they do not change the shared stages.
SELECTION_KEYS = ("selector", "gamma", "alpha", "iterations", "suite", "out", "budget", "dpo")


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
    # The initial policy's evaluation and the shared folder holding it: shared by every seed of a suite
    # whose test questions do not depend on the seed (`initial_evaluation`)
    initial_eval: EvalConfig
    initial_dir: Path
    stages: list[Stage] = field(default_factory=list)

    def configs(self) -> dict:
        return {name: cfgmod.as_dict(getattr(self, name)) for name in ("run", "synth", "select", "eval")}


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


def make_plan(file: str | None, overrides: list[str] | None = None, **flags) -> Plan:
    """Every config of a run, resolved and checked (trl's included) before any work. The overrides
    follow the config grammar (harness.config: unprefixed ones reach every section); the flags and
    the selector's options (`dits:gamma=0`) are the run section's."""
    name, extra = parse_selector(flags.pop("selector", None) or "")
    given = cfgmod.settings(cfgmod.CONFIG_CLASSES, file, [*(overrides or []), *(f"run.{item}" for item in extra)],
                            {**flags, "selector": name or None}, flag_prefix=("run",))
    run = cfgmod.compose(RunConfig, given)
    SELECTORS.get(run.selector)
    run = dataclasses.replace(run, answer_mode=get_task(run.task).answer_mode(run.answer_mode))
    identity = {k: getattr(run, k) for k in IDENTITY}

    def section(cls, **forced):
        built = cfgmod.compose(cls, given)
        names = {f.name for f in dataclasses.fields(cls)}
        return dataclasses.replace(built, **{k: v for k, v in {**identity, **forced}.items() if k in names})

    synth = section(SynthConfig, model=run.model, question_offset=run.sft.questions, reward_model=run.model)
    # Influence trains the policy in this process: the HF engine, whichever serves the other stages.
    select = section(SelectConfig, selector=run.selector, backend="hf")
    select = dataclasses.replace(select, gamma=select.gamma if run.gamma is None else run.gamma,
                                 alpha=select.alpha if run.alpha is None else run.alpha)
    evalc = section(EvalConfig, model=run.model, split="test", limit=run.test_questions, temperature=0.0)
    models.check(run.model)  # every value's range was checked as the sections were composed (config.RANGES)
    BACKENDS.get(run.backend)
    METHODS.get(synth.method)  # the tree search and its coach run hours in: a typo stops here
    if synth.credit:
        CREDITS.get(synth.credit)
    METRICS.get(run.metric or get_task(run.task, context_mode=run.context_mode).metric)
    launch.check(run)
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
    shared = {"run": {k: v for k, v in cfgmod.as_dict(run).items() if k not in SELECTION_KEYS + EXECUTION_KEYS},
              **{name: {k: v for k, v in cfgmod.as_dict(c).items() if k not in EXECUTION_KEYS}
                 for name, c in (("synth", synth), ("eval", evalc))}, "model": _model_identity(run.model)}
    for name in ("run", "synth", "eval"):
        for k in unread_keys(shared[name], web=get_task(run.task).setting == "web"):
            del shared[name][k]
    key = digest(shared)
    initial = initial_evaluation(evalc)
    initial_key = digest({"eval": {k: v for k, v in cfgmod.as_dict(initial).items() if k not in EXECUTION_KEYS},
                          "model": shared["model"]})
    plan = Plan(run, synth, select, evalc, rid, root / runs.dir_name(rid), root / "shared" / key, key, initial,
                root / "initial" / initial_key)
    plan.stages = Pipeline(plan).stages()
    return plan


def unread_keys(section: dict, web: bool) -> list[str]:
    """The keys of a section the shared stages do not read as set: the web environment's limits
    outside the web setting, the influence-guided search's validation set while its weight is 0
    (then the search is Optima's, tree for tree), TOA's knobs while the method is Optima's and the
    coach's while no coach values the nodes. Left out of the shared key, so that adding such a
    knob does not move every suite's shared stages."""
    unread = [] if web else ["web"]
    if not section.get("influence_weight"):
        unread += ["influence_weight", "influence_val_split", "influence_validation_size"]
    if section.get("method", "optima") == "optima":  # TOA's knobs, while the search is Optima's
        unread += ["method", "models", "toa_width", "toa_topk", "toa_alpha", "toa_tau"]
    if not section.get("credit"):  # the coach's, while no coach values the nodes
        unread += ["credit", "coach", "coach_backend", "coach_sees_gold", "coach_max_new_tokens"]
    return [k for k in unread if k in section]


def digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def initial_evaluation(evalc: EvalConfig) -> EvalConfig:
    """The initial policy's evaluation. It is greedy, so the seed reaches it only through the test
    questions' contexts (HotpotQA's deal of paragraphs draws from it; CBT's blocks and the debate
    tasks' whole questions do not): where they are the same at seed 0, it runs at seed 0, and every
    seed of a suite shares one."""
    if evalc.seed == 0 or evalc.temperature != 0:
        return evalc
    base = dataclasses.replace(evalc, seed=0)
    return base if test_contexts(base) == test_contexts(evalc) else evalc


def test_contexts(evalc: EvalConfig) -> list[tuple]:
    """The evaluated questions with what each agent is dealt."""
    task, _ = task_and_roster(evalc)
    return [(q.id, q.contexts) for q in task.load(evalc.split, evalc.data_dir, evalc.limit, evalc.online)]


def _model_identity(name: str) -> str:
    """A local directory's weights hash, a catalogue name with its recipe, or a hub id: no build
    or download needed."""
    path = Path(name).expanduser()
    if path.is_dir():
        return models.weights_hash(path)
    return f"{name}@{models.MODELS.get(name).recipe}" if name in models.MODELS else name
