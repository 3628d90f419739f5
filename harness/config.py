"""Typed configuration: defaults live here, YAML files and `key=value` overrides change them.

Unknown keys and values of the wrong type fail with one line naming the key and the nearest valid
names. Presets are YAML files in ``harness/presets/`` (package data): top-level keys apply to every command whose config has
them (task, model, decoding), and a mapping named after a command (``eval:``, ``synth:``) applies
to that command only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import yaml

from harness.errors import HarnessError
from harness.registry import nearest

CONFIGS = Path(__file__).resolve().parent / "presets"


@dataclass
class RuntimeConfig:
    """What every command that runs the agents shares: task, model, agents, data, decoding."""

    task: str = "cbt"
    model: str = "smollm2-135m"
    seed: int = 0
    data_dir: str | None = None  # else $HARNESS_DATA_DIR, else the hub (online) or the fixtures
    online: bool = False  # allow the Hugging Face hub
    out: str | None = None  # run directory; default runs/<command>/<run id>
    backend: str = "hf"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32  # dialogues per forward pass
    kv_cache: bool = True  # keep each agent's keys/values across turns
    max_turns: int = 10  # utterances per dialogue (Optima: 10)
    max_new_tokens: int = 128  # utterance token cap (Optima: 2000; sized for CPU); the reward's length override
    context_mode: str = "paragraph"  # or first_sentence, the reference's HotpotQA contexts
    metric: str | None = None  # default: the task's metric
    # "choice": on tasks with options each utterance's answer is the option its speaker scores
    # highest by log-likelihood (README: "Answers"); "generate": parsed from <A>...</A> (the paper's)
    answer_mode: str = "choice"
    # A dialogue capped without an answer gets one closing answer turn (harness.mas.dialogue); the
    # paper's protocol has none
    closing_turn: bool = True
    # The agents (harness.mas.roster.ROSTERS): default the task's setting's, information_exchange or debate
    roster: str | None = None
    # Frozen speakers, agent=model by comma ("Bob=tiny-random"): those agents speak with that model,
    # never trained; the others with `model`, the policy
    speaker_models: str | None = None


@dataclass
class EvalConfig(RuntimeConfig):
    """`harness eval`: greedy two-agent dialogues on a task split."""

    section: ClassVar[str] = "eval"
    split: str = "test"
    limit: int | None = None  # first N questions of the split
    temperature: float = 0.0  # evaluation is greedy
    references: bool = True  # CBT in choice mode: also the reference rows (harness.references)


@dataclass
class SynthConfig(RuntimeConfig):
    """`harness synth`: the probe, then one search tree per training question, then pairs.

    Names follow the reference code (Optima/DITS); defaults are its values unless noted.
    """

    section: ClassVar[str] = "synth"
    split: str = "train"
    questions: int = 16  # trees: the split's questions [question_offset, question_offset + questions)
    question_offset: int = 0
    explore_time: int = 8  # selection iterations per tree
    expand_time: int = 3  # rollouts from each selected node
    rollout_temperature: float = 0.7
    top_p: float = 1.0
    select_top_k: int = 10  # softmax over the Q of this many best candidates
    select_distance: float = 0.25  # candidates nearer than this to a selected node are dropped
    merge_distance: float = 0.1  # a new utterance nearer than this to a sibling merges into it
    trees_per_batch: int = 8  # trees whose rollouts advance together (their turns share forward passes)
    lambda1: float | None = None  # token-penalty weight; default: the task's reference recipe
    lambda2: float | None = None  # language-loss weight; default: the task's reference recipe
    min_dialogue_tokens: int = 40  # T at or below this: token term -1 (degenerate chats)
    max_dialogue_tokens: int = 2000  # T above this: loss term -1
    t_norm: int | None = None  # token normaliser; default: from the probe
    probe_size: int = 100  # probe dialogues, on the questions after the trees'
    probe_percentile: float = 80.0
    probe_temperature: float = 0.7
    dpo_epsilon: float | None = None  # chosen Q must exceed it; default: the task's (0.4 QA, 0.45 debate)
    dpo_min_gap: float = 0.2  # chosen Q - rejected Q must exceed it
    keep_fraction: float = 0.5  # per tree, the pairs with the best chosen Q
    reward_model: str | None = None  # frozen scorer of the loss term; default: the policy model


@dataclass
class SelectConfig:
    """`harness select`: score candidate pairs and keep the best alpha fraction.

    The DITS knobs follow the reference code (docs/reference-code.md §8)."""

    section: ClassVar[str] = "select"
    selector: str | None = None  # required: harness ls selectors
    pairs: str | None = None  # pairs.jsonl written by `harness synth`
    alpha: float = 0.5  # the fraction of the pool kept (DITS: 0.5)
    gamma: float = 1.0  # DITS: H = minmax(I) + gamma * Q
    seed: int = 0
    out: str | None = None  # default: <pairs dir>/select/<run id>
    model: str | None = None  # the policy whose influence is estimated; default: the pairs' policy
    val_split: str = "validation"  # influence validation questions: disjoint from every training pool
    validation_size: int = 20  # V greedy validation dialogues
    allow_overlap: bool = False  # let validation questions be training questions (the reference's leak)
    data_dir: str | None = None
    online: bool = False
    unit_size: int = 5  # pairs per influence unit (the reference's block of 5)
    warmup_steps: int = 50  # LoRA DPO steps on the pool before the unit steps (the reference's checkpoint-50)
    warmup_batch: int = 8  # pairs per warm-up step (the reference: batch 1 x grad accumulation 8)
    warmup_lr: float = 5e-5
    eta: float = 5e-5  # the unit step's learning rate (the reference's 5e-5); with eta_auto, where calibration starts
    # `--eta auto`: from eta up by x3 (at most eta_auto_steps times) until the median of the first
    # eta_calibration_units units changes eta_target_share of the validation scores; the unit steps
    # then use that eta. The reference's 5e-5 barely moves a small model (see the selection section).
    eta_auto: bool = False
    eta_target_share: float = 0.25
    eta_calibration_units: int = 3
    eta_auto_steps: int = 6
    step_optimizer: str = "adamw"  # the unit step: "adamw" (a fresh AdamW's first step, as the reference) or "sgd"
    micro_batch: int = 1  # pairs per forward and backward pass in a warm-up or unit step (gradients accumulate)
    # "fast": theta*'s validation dialogues checked as a draft of each unit's, only diverging ones
    # decoded; "reference": every unit's decoded in full, as the reference code (the oracle).
    influence_path: str = "fast"
    # The fast path's diverging dialogues of this many units decode in one batch (one LoRA copy per unit).
    decode_units: int = 8
    # ...and guess up to this many tokens a decoding step from their own text (prompt lookup: SmolLM2's
    # agents copy their information and repeat each other), keeping those greedy decoding would pick.
    decode_lookahead: int = 8
    beta: float | None = None  # DPO beta; default: the task's recipe
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # the reference's 0.05 makes each unit's step depend on a dropout draw
    backend: str = "hf"
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    max_turns: int = 10
    max_new_tokens: int = 128
    context_mode: str = "paragraph"
    roster: str | None = None  # as RuntimeConfig.roster: the validation dialogues' agents
    speaker_models: str | None = None  # as RuntimeConfig.speaker_models


@dataclass
class RunConfig(RuntimeConfig):
    """`harness run`: per iteration SFT data, SFT, probe, tree search, selection, DPO, evaluation.

    The tree search and the selection take their knobs from the `synth:` and `select:` sections
    of the same preset; this section holds the pools, the training recipes and the loop. Training
    uses LoRA throughout (the reference trains SFT and the final DPO full-parameter), so its learning
    rates are LoRA's; the reference's full-parameter values are noted beside them.
    """

    section: ClassVar[str] = "run"
    selector: str = "dits"
    gamma: float | None = None  # DITS: H = minmax(I) + gamma * Q; default: the select section's
    alpha: float | None = None  # fraction of the candidates kept; default: the select section's
    iterations: int = 3  # DITS's iteration_times
    suite: str = "default"  # runs/<suite>/: runs of a suite share their stages before selection
    budget: str | None = None  # a budget point of `harness suite --budgets` (its overrides), in the run id
    sft_from_initial: bool = True  # DITS: SFT from the initial model each iteration; False: from the last policy (Optima QA)
    # Disjoint question pools: train split [0, sft_questions) for SFT data, then the tree search's
    # synth.questions, then synth.probe_size for the probe, each iteration fresh ones after the last's;
    # select.val_split for influence; test for eval.
    sft_questions: int = 64
    sft_samples: int = 10  # dialogues sampled per SFT question (the reference's explore_count)
    sft_temperature: float = 0.7
    sft_keep_fraction: float = 0.7  # questions kept, best reward first (the reference's top 70%)
    sft_epsilon: float | None = None  # a kept dialogue's reward must reach it; default: the task's recipe
    sft_lr: float = 2e-4  # LoRA; the reference's full-parameter SFT: 2e-5 (QA), 1e-6 (ARC, MMLU)
    sft_epochs: int = 1  # the reference's iSFT-DPO: 1-2 (QA), 2-4 (debate)
    sft_batch_size: int = 4
    sft_grad_accum: int = 1
    max_seq_length: int = 2048  # SFT examples longer than this are dropped (and counted)
    dpo_lr: float = 5e-5  # LoRA (DITS's LoRA DPO recipe); the reference's full-parameter DPO: 5e-7
    dpo_epochs: int = 1
    dpo_beta: float | None = None  # default: the task's recipe
    dpo_batch_size: int = 4
    dpo_grad_accum: int = 2  # the reference: batch 1 x 8 GPUs x grad accumulation 8
    max_prompt_length: int = 1024  # pairs whose prompt is longer are dropped (and counted); never truncated
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    test_questions: int | None = 100  # first N of the test split, for every evaluated policy


CONFIG_CLASSES = (EvalConfig, SynthConfig, SelectConfig, RunConfig)


def _coerce(cls, key: str, value, source: str):
    """`value` converted to the declared type of field `key` (strings come from the command line)."""
    hint = typing.get_type_hints(cls)[key]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(t for t in typing.get_args(hint) if t is not type(None)) if optional else hint
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    try:
        if base is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if base is bool and not isinstance(value, bool):
            raise ValueError
        if base is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise HarnessError(f"{source}: {key} must be {base.__name__}, got {value!r}") from None


def build(cls, file: str | None = None, overrides: list[str] | dict | None = None, **flags):
    """A config of type `cls` from defaults, then a YAML file, then flags, then overrides."""
    names = [f.name for f in fields(cls)]
    values: dict = {}

    def put(key, value, source):
        if key not in names:
            raise HarnessError(f"{source}: unknown config key {key!r}; {nearest(key, names)}")
        values[key] = _coerce(cls, key, value, source)

    if file:
        data, path = _read_yaml(file)
        shared = {f.name for c in CONFIG_CLASSES for f in fields(c)}
        sections = {c.section: c for c in CONFIG_CLASSES}
        for key, value in data.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise HarnessError(f"{path}: {key}: expected a mapping of {key} config keys")
                section_names = [f.name for f in fields(sections[key])]
                for k, v in value.items():
                    if sections[key] is cls:
                        put(k, v, f"{path}: {key}")
                    elif k not in section_names:  # checked now, not when that command runs
                        raise HarnessError(f"{path}: {key}: unknown config key {k!r}; {nearest(k, section_names)}")
            elif key not in shared:
                valid = sorted(shared | set(sections))
                raise HarnessError(f"{path}: unknown config key {key!r}; {nearest(key, valid)}")
            elif key in names:
                put(key, value, str(path))
    for key, value in flags.items():
        if value is not None:
            put(key, value, f"--{key.replace('_', '-')}")
    label = f"{cls.section} override" if hasattr(cls, "section") else "override"
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            put(key, value, label)
        return cls(**values)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"override {item!r}: expected key=value")
        put(key, value, label)
    return cls(**values)


def _read_yaml(file: str) -> tuple[dict, Path]:
    path = Path(file)
    if not path.is_file() and (CONFIGS / f"{file}.yaml").is_file():
        path = CONFIGS / f"{file}.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        if path.suffix or len(path.parts) > 1:  # meant as a file
            raise HarnessError(f"{file}: config file not found") from None
        raise HarnessError(f"unknown preset or config file {file!r}; presets: {', '.join(presets())}") from None
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping of config keys")
    return data, path


def as_dict(config) -> dict:
    return dataclasses.asdict(config)


def recorded(section: str, values: dict) -> dict:
    """A section of a recorded config with the keys added to the harness since it was recorded at
    their defaults: a run record stays comparable (and resumable) when a knob is added."""
    cls = next(c for c in CONFIG_CLASSES if c.section == section)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return defaults | values


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIGS.glob("*.yaml"))}
