"""A cost model of `harness run`: per stage, the dialogues, tokens and optimizer steps a config's knobs
imply, and the device-hours they take at given throughputs.

The knobs say how many dialogues, rollouts, units and steps a run makes; they do not say how the
policy talks on a task. That is a `Shape`, fitted on a real run's cost ledger (`fit`): utterances a
dialogue, tokens an utterance (greedy and sampled), an agent's first prompt, how much of a dialogue a
tree-search rollout says, pairs a tree. A dialogue's prompt tokens grow with the square of its turns:
every turn's prompt holds the utterances before it.

Utterance lengths are taken as geometric (each token ends the utterance with the same chance), so a
cap c turns a mean m into m (1 - exp(-c / m)): one fitted mean serves every cap a run sets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from scipy.optimize import brentq

from harness import config as cfgmod
from harness.config import EvalConfig, RunConfig, SelectConfig, SynthConfig
from harness.errors import HarnessError


@dataclass(frozen=True)
class Shape:
    """How a policy's dialogues run on a task (fitted: `fit`)."""

    turns: float  # utterances a dialogue
    opening_tokens: float  # an agent's first prompt (instructions, question, its context; the chat framing folded in)
    greedy_tokens: float  # mean tokens an utterance, greedy, before any cap
    sampled_tokens: float  # the same, sampled (SFT data, probe, tree search)
    rollout_share: float  # the share of a dialogue's utterances a rollout says (it starts at a node below the root)
    pairs_per_tree: float
    agents: int = 2
    scored_tokens: float = 0.0  # option tokens scored an utterance (answer_mode=choice), prefilled on the utterance


@dataclass(frozen=True)
class Throughput:
    """Tokens a second of one device: generated, prompt tokens encoded, trained (forward and backward)."""

    decode: float
    prefill: float
    train: float


# Device profiles (per device, Llama-3-8B-sized work). H100 SXM, bf16, from first principles: prefill
# 2 x 8e9 FLOP a token at half of 989 TFLOP/s; training 6 x 8e9 at 40%; decoding bound by memory
# (3.35 TB/s), a batch of 64 reading the 16 GB of weights and ~3,000 tokens of keys/values a row each step.
THROUGHPUTS = {"h100-llama3-8b": Throughput(decode=5_000, prefill=30_000, train=8_000)}
SHAPES = Path(__file__).with_name("shapes.json")


def shapes() -> dict:
    """The fitted shapes shipped with the harness, by name (`shapes.json`, with where each came from)."""
    return json.loads(SHAPES.read_text())


def shape_named(name: str, overrides: list[str] | None = None) -> Shape:
    """A shipped shape with `field=value` overrides (a policy or task measured elsewhere)."""
    known = shapes()
    if name not in known:
        raise HarnessError(f"unknown shape {name!r}; shapes: {', '.join(known)}")
    values = dict(known[name]["shape"])
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or key not in values:
            raise HarnessError(f"shape override {item!r}: expected FIELD=VALUE, FIELD one of {', '.join(values)}")
        values[key] = float(value)
    return Shape(**values)


@dataclass(frozen=True)
class StageCost:
    stage: str
    dialogues: float = 0.0  # dialogues, rollouts or validation dialogues
    generated: float = 0.0
    prompt: float = 0.0  # every request's whole prompt (the ledger's prompt_tokens)
    prefill: float = 0.0  # the prompt tokens encoded: each agent's first prompt, then the others' utterances
    trained: float = 0.0  # tokens through a training forward and backward pass
    steps: float = 0.0  # optimizer steps
    units: float = 0.0  # influence units

    def hours(self, speed: Throughput) -> float:
        return (self.generated / speed.decode + self.prefill / speed.prefill + self.trained / speed.train) / 3600


def capped(mean: float, cap: int) -> float:
    """The mean length of geometric utterances of uncapped mean `mean` cut at `cap` tokens."""
    return mean * (1 - math.exp(-cap / mean))


def uncapped(observed: float, cap: int) -> float:
    """The uncapped mean whose capped mean at `cap` is `observed` (`capped`'s inverse)."""
    if not 0 < observed < cap:
        raise HarnessError(f"an observed mean of {observed:.1f} tokens an utterance at a cap of {cap} cannot be "
                           "fitted: it must lie strictly between 0 and the cap")
    return brentq(lambda m: capped(m, cap) - observed, observed, 1e9)


def dialogues(shape: Shape, count: float, utterance: float, start: float = 0.0) -> StageCost:
    """`count` dialogues said from utterance `start` to the end, `utterance` tokens an utterance: turn t's
    prompt holds the opening and the t utterances before it."""
    n, said = shape.turns, shape.turns - start
    earlier = (n * (n - 1) - start * (start - 1)) / 2  # sum of t over the turns said
    generated = said * utterance
    prompt = said * shape.opening_tokens + utterance * earlier
    prefill = min(prompt, shape.agents * shape.opening_tokens + (shape.agents - 1) * generated)
    prefill += said * shape.scored_tokens
    return StageCost("", count, count * generated, count * prompt, count * prefill)


def training(stage: str, examples: float, tokens: float, epochs: int, per_step: int) -> StageCost:
    """`epochs` passes over `examples` of `tokens` each, `per_step` examples an optimizer step."""
    return StageCost(stage, trained=examples * tokens * epochs, steps=math.ceil(examples / per_step) * epochs)


def predict(run: RunConfig, synth: SynthConfig, select: SelectConfig, evaluation: EvalConfig, shape: Shape,
            test_size: int, influence: bool, keeps_all: bool, diverged_share: float = 1.0,
            certified_share: float = 0.0) -> list[StageCost]:
    """Per stage of `harness run`, its predicted cost. `test_size`: the test questions evaluated;
    `influence`, `keeps_all`: the selector's traits; `diverged_share`: on the fast influence path, the
    share of validation dialogues a unit's step changes (decoded again; the rest are only checked);
    `certified_share`: the share certified instead of checked (0, the default, bounds the cost above)."""
    n, agents = shape.turns, shape.agents
    greedy = capped(shape.greedy_tokens, evaluation.max_new_tokens)
    sampled_run = capped(shape.sampled_tokens, run.max_new_tokens)
    sampled_synth = capped(shape.sampled_tokens, synth.max_new_tokens)
    start = (1 - shape.rollout_share) * n  # the mean node a rollout starts from
    # a pair: a node's prompt, a chosen and a rejected utterance
    pair_tokens = 2 * (shape.opening_tokens + start * sampled_synth + sampled_synth)
    pairs = synth.questions * shape.pairs_per_tree
    units = math.ceil(pairs / select.influence.unit_size) if influence else 0
    kept = pairs if keeps_all else max(1, math.floor(select.alpha * pairs + 0.5))
    evaluate = dialogues(shape, test_size, greedy)
    sft_examples = agents * int(run.sft.questions * run.sft.keep_fraction)

    out = [replace(evaluate, stage="eval")]
    for it in range(run.iterations):
        out += [replace(dialogues(shape, run.sft.questions * run.sft.samples, sampled_run), stage=f"it{it}/sft_data"),
                training(f"it{it}/sft", sft_examples, shape.opening_tokens + n * sampled_run, run.sft.epochs,
                         run.sft.batch_size * run.sft.grad_accum)]
        if it == 0:
            out.append(replace(evaluate, stage="it0/eval_sft"))
        out += [replace(dialogues(shape, synth.probe_size, sampled_synth), stage=f"it{it}/probe"),
                replace(dialogues(shape, synth.questions * synth.explore_time * synth.expand_time, sampled_synth,
                                  start), stage=f"it{it}/mcts"),
                selection(f"it{it}/select", shape, select, units, pair_tokens, diverged_share, certified_share)
                if influence
                else StageCost(f"it{it}/select"),
                training(f"it{it}/dpo", kept, pair_tokens, run.dpo.epochs, run.dpo.batch_size * run.dpo.grad_accum),
                replace(evaluate, stage=f"it{it}/eval")]
    return out


def selection(stage: str, shape: Shape, select: SelectConfig, units: int, pair_tokens: float,
              diverged_share: float, certified_share: float = 0.0) -> StageCost:
    """Influence estimation: the warm-up steps, one step a unit, and V greedy validation dialogues at
    theta* and after each unit's step. On the fast path a unit's dialogues are checked (each agent's
    whole memory encoded once, and in choice mode its options scored again) and only the diverged
    share decoded again. Certification (`influence.certify`) spares the checks of the certified share
    but its audited part; where it certifies anything it first takes, per validation dialogue, a
    forward pass of each agent's memory and a backward pass per computed margin (counted as trained
    tokens, a memory each: an upper bound)."""
    inf = select.influence
    greedy = capped(shape.greedy_tokens, select.max_new_tokens)
    at_theta_star = dialogues(shape, inf.validation_size, greedy)
    memory = shape.opening_tokens + shape.turns * greedy  # an agent's memory at a dialogue's end
    certifies = inf.path != "reference" and inf.certify and certified_share > 0
    precompute = inf.validation_size * (shape.agents * memory if certifies else 0.0)
    margins = inf.validation_size * inf.certify_margins * memory if certifies else 0.0
    if inf.path == "reference":
        per_unit = dialogues(shape, inf.validation_size, greedy)
        checked = 0.0
    else:
        per_unit = dialogues(shape, inf.validation_size * diverged_share, greedy)
        checked_share = 1 - certified_share * (1 - inf.certify_audit) if certifies else 1.0
        checked = inf.validation_size * checked_share * (shape.agents * memory + shape.turns * shape.scored_tokens)
    warmup = inf.warmup_steps * inf.warmup_batch
    return StageCost(stage, at_theta_star.dialogues + units * inf.validation_size,
                     at_theta_star.generated + units * per_unit.generated,
                     at_theta_star.prompt + units * per_unit.prompt,
                     at_theta_star.prefill + precompute + units * (per_unit.prefill + checked),
                     (warmup + units * inf.unit_size) * pair_tokens + margins, inf.warmup_steps + units, units)


def fit(ledger: list[dict], policy: str, run: RunConfig, synth: SynthConfig, evaluation: EvalConfig,
        test_size: int) -> Shape:
    """A shape from one suite's cost ledger (`harness report`'s cost_ledger.json rows) and the knobs
    it ran with. Turns and the opening come from the evaluations (one question set, policies that
    talk at different lengths: the prompt a dialogue grows by (turns - 1) / 2 tokens per generated
    token); greedy and sampled utterance lengths from `policy`'s initial evaluation and SFT data; the
    rollout share from its tree search; pairs a tree from the DPO steps of the selector that trains
    the most (it keeps every pair)."""
    rows = [r for r in ledger if r["policy"] == policy]
    stage = {r["stage"]: r for r in rows}
    missing = [s for s in ("eval", "it0/sft_data", "it0/mcts") if s not in stage]
    if missing:
        raise HarnessError(f"the ledger has no {', '.join(missing)} stage for policy {policy!r}")
    points = {(r["generated_tokens"] / test_size, r["prompt_tokens"] / test_size)
              for r in ledger if r["category"] == "eval"}
    if len(points) < 2:
        raise HarnessError("fitting turns needs evaluations of at least two policies that talk at different lengths")
    slope, intercept = _line(sorted(points))
    turns = 2 * slope + 1
    # intercept: the prompt of a dialogue that says nothing, turns openings
    opening = intercept / turns
    greedy = uncapped(stage["eval"]["generated_tokens"] / (test_size * turns), evaluation.max_new_tokens)
    sampled = uncapped(stage["it0/sft_data"]["generated_tokens"] / (run.sft.questions * run.sft.samples * turns),
                       run.max_new_tokens)
    rollouts = synth.questions * synth.explore_time * synth.expand_time
    rollout_share = stage["it0/mcts"]["generated_tokens"] / (rollouts * turns * capped(sampled, synth.max_new_tokens))
    dpo = max((r for r in ledger if r["stage"] == "it0/dpo"), key=lambda r: r["training_steps"])
    pairs = dpo["training_steps"] / run.dpo.epochs * run.dpo.batch_size * run.dpo.grad_accum
    # choice mode: the options scored an utterance, from the initial evaluation (older ledgers lack the column)
    scored = stage["eval"].get("scored_tokens") or 0.0
    return Shape(turns, opening, greedy, sampled, rollout_share, pairs / synth.questions,
                 scored_tokens=scored / (test_size * turns))


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    xs, ys = zip(*points)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def configs(preset: str | None, overrides: list[str] | None = None):
    """The run, synth, select and eval sections of a preset with overrides, as `harness run` composes them."""
    given = cfgmod.settings(cfgmod.CONFIG_CLASSES, preset, overrides)
    return tuple(cfgmod.compose(cls, given) for cls in (RunConfig, SynthConfig, SelectConfig, EvalConfig))


def table(costs: list[StageCost], speed: Throughput) -> list[list]:
    """Rows of stage, dialogues, generated, prompt, prefilled and trained tokens, optimizer steps and
    device-hours, then their total."""
    rows = [[c.stage, c.dialogues, c.generated, c.prompt, c.prefill, c.trained, c.steps, c.hours(speed)]
            for c in costs]
    return rows + [["total", *(sum(r[i] for r in rows) for i in range(1, 8))]]


TABLE_HEADERS = ["stage", "dialogues", "generated", "prompt", "prefilled", "trained", "steps", "device-hours"]
