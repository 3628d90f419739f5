"""The Backend interface: batched chat generation with token accounting, and text scoring.

What callers may use of any backend is declared here, nothing more: the model's identity
(`model_info`), its tokenizer or None, the batch size, the usage ledger, `generate` with a sample
seed per request, `loglikelihood`, `turn_nll` and `release`. Engine-specific helpers (the HF
engine's cache slots, for instance) live on the engine and are used only by code that requires it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from harness.seeding import derive_seed


def turn_frame(tokenizer) -> tuple[str, str]:
    """The chat template's text before and after the content of one assistant message: `turn_nll`
    scores a text as that content (and the turn's end)."""
    marker = "\x00"
    rendered = tokenizer.apply_chat_template([{"role": "assistant", "content": marker}], tokenize=False)
    head, tail = rendered.split(marker, 1)
    return head, tail


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int  # the utterance cap: the run's (RuntimeConfig.max_new_tokens), no default of its own
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # as OpenAI: generation ends before the first stop string
    # Greedy only: each decoding step may also feed up to this many tokens guessed from the row's
    # own text (prompt lookup) and keep those the model would have generated; 0 = one token a step.
    lookahead: int = 0


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    # Requests that share a key extend one conversation: a backend may keep its encoded prefix.
    cache_key: str | None = None
    # The LoRA adapter to answer with, where the backend's model holds several and decodes a batch
    # of them together (one adapter per row); None: the model as it is.
    adapter: str | None = None
    # The seed of this request's own sampling generator (temperature > 0): its text then depends on
    # neither the batch it is decoded in nor the requests beside it. None: derived from the seed of
    # the `generate` call and the request's place in it (`Backend.sample_seeds`).
    seed: int | None = None


@dataclass(frozen=True)
class Choice:
    """Continuations to score after a chat context (lm-eval's `loglikelihood` requests sharing one
    context): the context is the messages rendered up to a new assistant turn, then `prefix`; each
    continuation is scored as what follows."""

    messages: list[dict]
    continuations: tuple[str, ...]
    prefix: str = ""
    cache_key: str | None = None  # as Request.cache_key: the context's prefix may be cached there
    adapter: str | None = None  # as Request.adapter


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or stop string) | "length"
    cached_tokens: int = 0  # prompt tokens reused from the cache instead of encoded
    token_ids: tuple[int, ...] = ()  # the generated tokens, end of turn excluded, where the backend has them


@dataclass
class Usage:
    """What a backend spent, for cost ledgers."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    scored_tokens: int = 0  # tokens read by `logprobs` and `turn_nll`
    guessed_tokens: int = 0  # completion tokens taken from lookahead guesses (`Sampling.lookahead`)
    guess_near_ties: int = 0  # tokens picked within a near-tie in a step that fed guesses
    generate_calls: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "extra"} | self.extra


class Backend(ABC):
    """A generation and scoring engine. Subclasses call `__init__` with what identifies them; one
    registered in `BACKENDS` is built by `make_backend` with keywords `model` and the runtime
    settings it declares in `settings`."""

    settings: tuple[str, ...] = ()  # the runtime config keys `make_backend` passes to the constructor
    model_info: dict  # the model's identity: name, and where known its path and weights' sha256
    tokenizer: Any | None  # a Hugging Face tokenizer, or None where the engine exposes none (a served model)
    batch_size: int  # requests per forward pass: callers run that many dialogues at a time
    usage: Usage  # what the backend spent since it was built, for cost ledgers

    def __init__(self, model_info: dict, tokenizer: Any | None, batch_size: int):
        self.model_info, self.tokenizer, self.batch_size = model_info, tokenizer, batch_size
        self.usage = Usage()

    @abstractmethod
    def generate(self, requests: list[Request], sampling: Sampling, seed: int = 0) -> list[Completion]:
        """One completion per request, in order. A sampled request draws from its own generator
        (`sample_seeds`): same seeds and inputs give the same outputs, whatever the batching."""

    @abstractmethod
    def loglikelihood(self, choices: list[Choice]) -> list[list[tuple[float, int]]]:
        """Per choice, per continuation: the summed log-probability of its tokens after the context,
        and their number."""

    @abstractmethod
    def turn_nll(self, texts: list[str]) -> list[float]:
        """Mean negative log-likelihood of each text's tokens as the content of one assistant turn
        (the reward's language-loss term scores every utterance this way)."""

    def release(self, cache_key_prefix: str) -> None:
        """Forget cached prefixes whose key starts with this prefix (a finished dialogue)."""

    @staticmethod
    def sample_seeds(requests: list[Request], seed: int) -> list[int]:
        """Each request's sampling seed: its own, else one derived from the call's seed and its index."""
        return [r.seed if r.seed is not None else derive_seed(seed, i) for i, r in enumerate(requests)]
