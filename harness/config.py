"""Typed configuration: defaults live here, YAML files and `key=value` overrides change them.

A command's config is a section (`run`, `synth`, `select`, `eval`) built from the runtime fields every
command shares and its own; `run` and `select` hold nested sections (`lora`, `sft`, `dpo`,
`influence`). One grammar for presets (YAML, ``harness/presets/`` as package data) and the command
line: an unprefixed `key` reaches every section and nested section that has it (a section's own key
shadows a nested section's of the same name: `alpha` is the selection's fraction, LoRA's is
`lora.alpha`); each prefix narrows it (`select.key`, `lora.key`, `select.lora.key`), and so does a
YAML mapping named after a section. Precedence: defaults < preset top level < preset section <
command-line flags < command-line unprefixed < command-line prefixed (the more prefixes, the later).
Unknown keys and values of the wrong type fail with one line naming the key and the nearest valid names.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import yaml

from harness.errors import HarnessError
from harness.registry import nearest

CONFIGS = Path(__file__).resolve().parent / "presets"


@dataclass
class ServerConfig:
    """The OpenAI-compatible servers of `backend=openai` (harness.backends.openai) and the servers
    `backend=llama.cpp` starts itself; execution settings, not part of a run's identity."""

    section: ClassVar[str] = "server"
    base_urls: str | None = None  # comma-separated, e.g. http://127.0.0.1:8000/v1 (openai)
    # The names the servers serve models under, as model=id pairs by comma
    # (smollm2-135m=HuggingFaceTB/SmolLM2-135M-Instruct); a model not named is asked for by its own
    # name, so a policy a run trains is never answered for by another the server holds.
    model_ids: str | None = None
    tokenizer: str | None = None  # chat template and token counts for scoring; default: `model`
    revision: str | None = None  # what the user declares the served weights are (recorded, and keys the cache)
    flavour: str = "openai"  # openai, vllm or llama.cpp: which extras switch the server's own samplers off
    concurrency: int = 4  # requests in flight per server
    timeout: float = 120.0  # seconds per request
    retries: int = 4  # after the first attempt, with exponential backoff
    backoff: float = 1.0  # seconds before the first retry
    api_key_env: str | None = None  # the environment variable holding the API key (never recorded)
    precision: str = "f32"  # llama.cpp: the GGUF each policy is served as (f32, f16 or bf16)
    threads: int | None = None  # llama.cpp: server threads; default: the machine's cores
    context: int = 4096  # llama.cpp: tokens of context per request (prompt and completion)


@dataclass(frozen=True)
class WebConfig:
    """The web environment's limits (`harness.web.env`): what one observation shows and how far an
    episode may go. `page_chars` drives the cost: every page opened is that much prompt."""

    section: ClassVar[str] = "web"
    page_chars: int = 2000  # characters of a page's text shown
    max_links: int = 40  # links shown (and clickable) on a page
    max_pages: int = 20  # distinct pages an episode may open
    max_steps: int = 30  # actions (clicks and backs) an episode may take
    max_bytes: int = 2_000_000  # bytes of a page read; a longer page is cut (too_big)
    fetch_timeout_s: float = 10.0  # a fetch's whole deadline, redirects included: a safety stop, counted
    max_redirects: int = 5  # redirects followed in one fetch

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            kinds = (int, float) if f.name == "fetch_timeout_s" else int
            least = 0 if f.name == "max_redirects" else 1e-9
            if isinstance(value, bool) or not isinstance(value, kinds) or value < least:
                raise HarnessError(f"web.{f.name}={value!r} must be a positive number")


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
    cache: str | None = None  # directory of the response cache (harness.backends.response_cache); None = off
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
    server: ServerConfig = field(default_factory=ServerConfig)
    web: WebConfig = field(default_factory=WebConfig)  # only a web roster reads it


@dataclass
class EvalConfig(RuntimeConfig):
    """`harness eval`: greedy two-agent dialogues on a task split."""

    section: ClassVar[str] = "eval"
    split: str = "test"
    limit: int | None = None  # first N questions of the split
    temperature: float = 0.0  # evaluation is greedy
    references: bool = True  # CBT in choice mode: also the reference rows (harness.references)
    # An optional judge grading each answer with LangChain's cot_qa prompt, WebWalkerQA's metric
    # (harness.judge), in its own column named after the judge
    judge: str | None = None  # catalogue name, directory, or a served name (judge_backend=openai)
    judge_backend: str | None = None  # default: the section's backend
    judge_max_new_tokens: int = 256  # the judge reasons step by step before its grade


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
    # DITS's influence-oriented expansion: select by softmax over Q + w * minmax(I), I a node's pair's
    # estimate by the influence screen (harness.screen); 0 is Optima's search (README, "Synthesis")
    influence_weight: float = 0.0
    influence_val_split: str = "validation"  # the screen's validation questions: disjoint from the trees'
    influence_validation_size: int = 20
    # The search (harness.synth.synthesis.METHODS): "optima", or "toa": several models act in each tree
    # (harness.synth.actions), `models` naming those beside the policy (`model`, which always acts)
    method: str = "optima"
    models: str | None = None  # comma-separated catalogue names, directories or served names
    toa_width: int = 3  # a node takes actions until it has this many children, then the descent goes on
    toa_topk: int = 1  # the descent's candidates: this many children with the best Q (TOA's topk_child)
    toa_alpha: float = 0.01  # UCB's exploration weight (TOA's)
    toa_tau: float = 1.0  # UCB squashes values by sigmoid(value / tau) (TOA's 0.1 for its reward model's scale)
    # Node values: None, the rollouts' reward (Optima's); "mappa": each utterance's coach credit
    # (harness.credit, harness.synth.credit), also recorded for reports in credit.json
    credit: str | None = None
    coach: str | None = None  # the coach model: catalogue name, directory, or a served name (coach_backend=openai)
    coach_backend: str | None = None  # default: the section's backend
    coach_sees_gold: bool = False  # MAPPA's coach may see the gold answer; off: credit without gold labels
    coach_max_new_tokens: int = 64  # the coach's reply cap (PROCESS_SCORE: x and a short reason)


@dataclass
class LoraConfig:
    """The LoRA adapter every training step uses (peft's r, lora_alpha, lora_dropout)."""

    section: ClassVar[str] = "lora"
    r: int = 32
    alpha: int = 32
    dropout: float = 0.05


@dataclass
class SFTConfig:
    """The SFT data (sampled dialogues, the best kept) and trl's SFT recipe."""

    section: ClassVar[str] = "sft"
    # Disjoint question pools: train split [0, sft.questions) for SFT data, then the tree search's
    # synth.questions, then synth.probe_size for the probe, each iteration fresh ones after the last's;
    # select.influence.val_split for influence; test for eval.
    questions: int = 64
    samples: int = 10  # dialogues sampled per SFT question (the reference's explore_count)
    temperature: float = 0.7
    keep_fraction: float = 0.7  # questions kept, best reward first (the reference's top 70%)
    epsilon: float | None = None  # a kept dialogue's reward must reach it; default: the task's recipe
    from_initial: bool = True  # DITS: SFT from the initial model each iteration; False: from the last policy (Optima QA)
    lr: float = 2e-4  # LoRA; the reference's full-parameter SFT: 2e-5 (QA), 1e-6 (ARC, MMLU)
    epochs: int = 1  # the reference's iSFT-DPO: 1-2 (QA), 2-4 (debate)
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_length: int = 2048  # SFT examples longer than this are dropped (and counted)


@dataclass
class DPOConfig:
    """trl's DPO recipe for the selected pairs."""

    section: ClassVar[str] = "dpo"
    lr: float = 5e-5  # LoRA (DITS's LoRA DPO recipe); the reference's full-parameter DPO: 5e-7
    epochs: int = 1
    beta: float | None = None  # default: the task's recipe
    batch_size: int = 4
    grad_accum: int = 2  # the reference: batch 1 x 8 GPUs x grad accumulation 8
    max_prompt_length: int = 1024  # pairs whose prompt is longer are dropped (and counted); never truncated


@dataclass
class TrainConfig:
    """How SFT and DPO run (harness.train.launch): in this process, or under `accelerate launch` with
    one process per device; execution settings, not part of a run's identity."""

    section: ClassVar[str] = "train"
    launcher: str = "process"  # or "accelerate"
    # accelerate: processes (one per GPU). The recipes' global batch stays batch_size x grad_accum:
    # each process accumulates grad_accum / num_processes steps.
    num_processes: int = 1
    # accelerate: its config file, a path or a name in harness/presets/accelerate/ (ddp, zero3)
    accelerate_config: str | None = None
    gradient_checkpointing: bool = False
    # > 0: trl saves a checkpoint every this many steps beside the stage, and a stage started again
    # (`--resume`) resumes from the last one instead of from step 0
    checkpoint_steps: int = 0


@dataclass
class InfluenceConfig:
    """DITS's influence estimate; the knobs follow the reference code (docs/reference-code.md §8)."""

    section: ClassVar[str] = "influence"
    val_split: str = "validation"  # influence validation questions: disjoint from every training pool
    validation_size: int = 20  # V greedy validation dialogues
    allow_overlap: bool = False  # let validation questions be training questions (the reference's leak)
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
    # decoded; "reference": every unit's decoded in full, as the reference code (the oracle); "server":
    # as "reference" with the dialogues answered by backend=openai's vLLM servers on each unit's adapter.
    path: str = "fast"
    # The fast path's diverging dialogues of this many units decode in one batch (one LoRA copy per unit).
    decode_units: int = 8
    # ...and guess up to this many tokens a decoding step from their own text (prompt lookup: SmolLM2's
    # agents copy their information and repeat each other), keeping those greedy decoding would pick.
    decode_lookahead: int = 8
    # The fast path certifies the drafts a unit's step cannot change to first order and checks only the
    # rest (harness/dits/influence/certify.py): each draft's certify_margins smallest margins get their
    # gradients at theta*, a margin's predicted move times certify_safety must stay below the margin, and
    # every unit re-checks the certify_audit share of its certified drafts (at least one), counting the
    # wrong certifications (the target is none).
    certify: bool = True
    certify_margins: int = 8
    certify_safety: float = 2.0
    certify_audit: float = 0.1
    max_loras: int = 8  # path=server: units whose adapters a server holds and answers at once (<= vllm's --max-loras)
    adapter_dir: str | None = None  # path=server: where unit adapters are written for the servers; default /dev/shm
    beta: float | None = None  # DPO beta of the warm-up and unit steps; default: the task's recipe


@dataclass
class SelectConfig(RuntimeConfig):
    """`harness select`: score candidate pairs and keep the best alpha fraction. The runtime fields
    run the influence validation dialogues; their task, answer_mode and closing_turn are the pairs'."""

    section: ClassVar[str] = "select"
    model: str | None = None  # the policy whose influence is estimated; default: the pairs' policy
    out: str | None = None  # default: <pairs dir>/select/<run id>
    selector: str | None = None  # required: harness ls selectors
    pairs: str | None = None  # pairs.jsonl written by `harness synth`
    alpha: float = 0.5  # the fraction of the pool kept (DITS: 0.5)
    gamma: float = 1.0  # DITS: H = minmax(I) + gamma * Q
    # "mappa": the coach also scores the pool of any other selector, recorded beside its selection (the
    # coach's gap of the pairs kept and of the pool) for the reports' credit table
    credit: str | None = None
    # The coach of `--selector mappa` and of `credit` (harness.credit), which ranks pairs by its score
    # gap; as synth's keys
    coach: str | None = None
    coach_backend: str | None = None
    coach_sees_gold: bool = False
    coach_max_new_tokens: int = 64
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    # dropout 0: the reference's 0.05 makes each unit's step depend on a dropout draw
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(dropout=0.0))


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
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lr_scheduler: str = "cosine"  # SFT's and DPO's
    warmup_ratio: float = 0.1  # SFT's and DPO's
    test_questions: int | None = 100  # first N of the test split, for every evaluated policy


CONFIG_CLASSES = (EvalConfig, SynthConfig, SelectConfig, RunConfig)
NESTED_CLASSES = (LoraConfig, SFTConfig, DPOConfig, TrainConfig, InfluenceConfig, ServerConfig, WebConfig)


def _coerce(cls, key: str, value, source: str, label: str | None = None):
    """`value` converted to the declared type of field `key` (strings come from the command line);
    errors name it `label` (its dotted path)."""
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
        raise HarnessError(f"{source}: {label or key} must be {base.__name__}, got {value!r}") from None


SECTIONS = {c.section: c for c in CONFIG_CLASSES}
NESTED = {c.section: c for c in NESTED_CLASSES}

# Records written before the nested sections (a80c8ba and before) hold flat keys: where each lives now.
FLAT_KEYS = {
    "run": {**{f"sft_{n}": ("sft", n) for n in SFTConfig.__dataclass_fields__ if n != "max_seq_length"},
            **{f"dpo_{n}": ("dpo", n) for n in DPOConfig.__dataclass_fields__ if n != "max_prompt_length"},
            "max_seq_length": ("sft", "max_seq_length"), "max_prompt_length": ("dpo", "max_prompt_length"),
            **{f"lora_{n}": ("lora", n) for n in ("alpha", "dropout")}, "lora_r": ("lora", "r")},
    "select": {**{n: ("influence", n) for n in InfluenceConfig.__dataclass_fields__ if n != "path"},
               "influence_path": ("influence", "path"), "lora_r": ("lora", "r"),
               **{f"lora_{n}": ("lora", n) for n in ("alpha", "dropout")}},
}


@functools.cache
def _leaves(cls, prefix: tuple = ()) -> tuple[tuple[tuple[str, ...], type], ...]:
    """Every settable field of `cls` as (path, owning class), nested sections' fields included."""
    hints = typing.get_type_hints(cls)
    out = ()
    for f in fields(cls):
        if hints[f.name] in NESTED_CLASSES:
            out += _leaves(hints[f.name], prefix + (f.name,))
        else:
            out += ((prefix + (f.name,), cls),)
    return out


@dataclass(frozen=True)
class Setting:
    """One `key=value` of a preset, a flag or the command line, with the sections it is narrowed to."""

    prefix: tuple[str, ...]
    key: str
    value: object
    source: str
    level: int  # 0 preset, 1 command-line flag, 2 command-line override

    @property
    def rank(self) -> tuple[int, int]:
        return self.level, len(self.prefix)

    @property
    def name(self) -> str:
        return ".".join(self.prefix + (self.key,))


def targets(setting: Setting, cls) -> list[tuple[tuple[str, ...], type]]:
    """The fields of section `cls` a setting reaches: those named `key` under its prefixes (in order),
    a section's own field shadowing its nested sections' of the same name."""
    def under(path):
        rest = iter((getattr(cls, "section", ""),) + path[:-1])
        return all(p in rest for p in setting.prefix)

    hits = [(path, owner) for path, owner in _leaves(cls) if path[-1] == setting.key and under(path)]
    depth = min((len(p) for p, _ in hits), default=0)
    return [(p, owner) for p, owner in hits if len(p) == depth]


def _check(setting: Setting, classes) -> None:
    """One line for a setting no section of `classes` has."""
    for part in setting.prefix:
        if part not in SECTIONS and part not in NESTED:
            raise HarnessError(f"{setting.source}: {setting.name}: unknown section {part!r}; "
                               f"valid: {', '.join([*SECTIONS, *NESTED])}")
    if not any(targets(setting, c) for c in classes):
        scope = {p[-1] for c in classes for p, _ in _leaves(c)
                 if all(part in (getattr(c, "section", ""),) + p[:-1] for part in setting.prefix)}
        current = {p[-1] for c in CONFIG_CLASSES for p, _ in _leaves(c)}
        renamed = {flat: ".".join(path) for names in FLAT_KEYS.values() for flat, path in names.items()
                   if flat not in current}
        hint = f"renamed: {renamed[setting.key]}" if setting.key in renamed else nearest(setting.key, sorted(scope))
        shown = setting.key if setting.level == 0 else setting.name  # a preset's source names its prefix
        raise HarnessError(f"{setting.source}: unknown config key {shown!r}; {hint}")


def _preset(file: str) -> list[Setting]:
    """A YAML file's settings: a mapping named after a section or nested section narrows its keys."""
    data, path = _read_yaml(file)

    def walk(mapping: dict, prefix: tuple) -> list[Setting]:
        out = []
        for key, value in mapping.items():
            key = str(key)
            if key in SECTIONS or key in NESTED:
                if not isinstance(value, dict):
                    raise HarnessError(f"{path}: {'.'.join(prefix + (key,))}: expected a mapping of {key} config keys")
                out += walk(value, prefix + (key,))
            elif isinstance(value, dict):
                raise HarnessError(f"{path}: unknown section {'.'.join(prefix + (key,))!r}; "
                                   f"{nearest(key, [*SECTIONS, *NESTED])}")
            else:
                where = f"{path}: {'.'.join(prefix)}" if prefix else str(path)
                out.append(Setting(prefix, key, value, where, 0))
        return out

    settings = walk(data, ())
    for s in settings:  # checked now, not when that command runs
        _check(s, CONFIG_CLASSES)
    return settings


def _overrides(items: list[str] | dict | None, source: str) -> list[Setting]:
    """Command-line `[section.]key=value` items, or a mapping (nested mappings narrow their keys)."""
    if isinstance(items, dict):
        def walk(mapping, prefix):
            return [s for k, v in mapping.items()
                    for s in (walk(v, prefix + (k,)) if isinstance(v, dict) else [Setting(prefix, k, v, source, 2)])]
        return walk(items, ())
    out = []
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"override {item!r}: expected key=value")
        *prefix, key = name.split(".")
        out.append(Setting(tuple(prefix), key, value, source, 2))
    return out


# The values a key may take where not every value of its type makes sense, by its dotted name in a
# section (`alpha` is the selection's fraction, `lora.alpha` LoRA's); checked for every value a preset,
# a flag or an override gives, so a bad one stops the command before any work.
RANGES = {
    **dict.fromkeys(("alpha", "keep_fraction", "sft.keep_fraction", "top_p"), "(0, 1]"),
    **dict.fromkeys(("warmup_ratio", "lora.dropout"), "[0, 1)"),
    **dict.fromkeys(("sft.lr", "dpo.lr", "influence.eta", "influence.warmup_lr", "dpo.beta", "influence.beta"),
                    "(0, inf)"),
    **dict.fromkeys(("temperature", "rollout_temperature", "probe_temperature", "sft.temperature"), "[0, inf)"),
    **dict.fromkeys(("max_new_tokens", "max_turns", "batch_size", "limit", "questions", "test_questions",
                     "iterations", "lora.r", "influence.validation_size", "influence.unit_size",
                     *(f"sft.{k}" for k in ("questions", "samples", "epochs", "batch_size", "grad_accum",
                                            "max_seq_length")),
                     *(f"dpo.{k}" for k in ("epochs", "batch_size", "grad_accum", "max_prompt_length"))), "[1, inf)"),
    "probe_percentile": "[0, 100]",
    **dict.fromkeys(("coach_max_new_tokens", "judge_max_new_tokens", "toa_width", "toa_topk"), "[1, inf)"),
    "toa_tau": "(0, inf)",
    "toa_alpha": "[0, inf)",
    "influence.certify_margins": "[1, inf)",
    "influence.certify_safety": "(0, inf)",
    "influence.certify_audit": "[0, 1]",
}


# The names a key may take where the code that reads it sits in a layer this module may not import
# (their registries there: `tests/test_config.py` holds the two equal), so a typo stops the command
# before any work, not at the stage that reads it hours later.
CHOICES = {
    "dtype": ("float32", "bfloat16", "float16"),
    "influence.path": ("reference", "fast", "server", "screen"),  # harness.dits.influence.estimator.PATHS
    "influence.step_optimizer": ("adamw", "sgd"),  # harness.dits.influence.reference_path.STEP_OPTIMIZERS
    "server.flavour": ("openai", "vllm", "llama.cpp"),  # harness.backends.openai.FLAVOURS
    "server.precision": ("f32", "f16", "bf16"),  # harness.backends.gguf_export.PRECISIONS
}


def _check_range(name: str, value, source: str) -> None:
    """One line for a value outside its key's range (`RANGES`) or names (`CHOICES`); None (a default
    deferred) passes."""
    if name in CHOICES and value is not None and value not in CHOICES[name]:
        raise HarnessError(f"{source}: {name} must be one of {', '.join(CHOICES[name])}, got {value!r}")
    interval = RANGES.get(name)
    if interval is None or value is None:
        return
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    if not (above and below):
        wanted = ("positive" if interval == "(0, inf)" else f"at least {low:g}" if high == float("inf")
                  else f"in {interval}")
        raise HarnessError(f"{source}: {name} must be {wanted}, got {value!r}")


def compose(cls, settings: list[Setting]):
    """Section `cls` from its defaults and every setting that reaches it, lowest rank first."""
    values: dict[tuple[str, ...], object] = {}
    for s in sorted(settings, key=lambda s: s.rank):
        for path, owner in targets(s, cls):
            values[path] = _coerce(owner, path[-1], s.value, s.source, ".".join(path))
            _check_range(".".join(path), values[path], s.source)
    top = {path[0]: value for path, value in values.items() if len(path) == 1}
    for f in fields(cls):  # a nested section: its default with the values set in it
        inner = {path[1]: value for path, value in values.items() if len(path) == 2 and path[0] == f.name}
        if inner:
            top[f.name] = dataclasses.replace(f.default_factory(), **inner)
    return cls(**top)


def settings(classes, file: str | None = None, overrides: list[str] | dict | None = None,
             flags: dict | None = None, flag_prefix: tuple[str, ...] = ()) -> list[Setting]:
    """A preset's, the flags' and the command line's settings, each checked against `classes`."""
    out = _preset(file) if file else []
    given = [Setting(flag_prefix, k, v, f"--{k.replace('_', '-')}", 1) for k, v in (flags or {}).items() if v is not None]
    label = f"{classes[0].section} override" if len(classes) == 1 and hasattr(classes[0], "section") else "override"
    given += _overrides(overrides, label)
    for s in given:
        _check(s, classes)
    return out + given


def build(cls, file: str | None = None, overrides: list[str] | dict | None = None, **flags):
    """A config of type `cls` from defaults, then a YAML file, then flags, then overrides."""
    return compose(cls, settings([cls], file, overrides, flags))


def _read_yaml(file: str) -> tuple[dict, Path]:
    path = Path(file)
    if not path.is_file() and (CONFIGS / f"{file}.yaml").is_file():
        path = CONFIGS / f"{file}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        if path.suffix or len(path.parts) > 1:  # meant as a file
            raise HarnessError(f"{file}: config file not found") from None
        raise HarnessError(f"unknown preset or config file {file!r}; presets: {', '.join(presets())}") from None
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping of config keys")
    return data, path


def as_dict(config) -> dict:
    return dataclasses.asdict(config)


def flatten(values: dict, prefix: str = "") -> dict:
    """A section's values (as `as_dict` or `recorded` give them) by dotted name: `lora.r`."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        out |= flatten(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return out


def reached(name: str, section: str) -> list[str]:
    """The dotted fields of `section` that the override key `name` reaches (`select.validation_size`
    -> `influence.validation_size`)."""
    *prefix, key = name.split(".")
    return [".".join(path) for path, _ in targets(Setting(tuple(prefix), key, None, name, 2), SECTIONS[section])]


def recorded(section: str, values: dict) -> dict:
    """A section of a recorded config in today's nested layout (older records' flat keys moved into
    their sections), with the keys added to the harness since it was recorded at their defaults: a run
    record stays comparable (and resumable) when a knob is added."""
    def merge(base: dict, over: dict) -> dict:
        return base | {k: merge(base[k], v) if isinstance(base.get(k), dict) and isinstance(v, dict) else v
                       for k, v in over.items()}

    moved: dict = {}
    for key, value in values.items():
        *outer, leaf = FLAT_KEYS.get(section, {}).get(key, (key,))
        moved = merge(moved, {outer[0]: {leaf: value}} if outer else {leaf: value})
    return merge(as_dict(SECTIONS[section]()), moved)


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONFIGS.glob("*.yaml"))}
