"""The dialogue loop: the agents of a roster (`harness.mas.roster`) speak in turn; all dialogues
advance together. The policy speaks for every agent but the roster's frozen speakers, each of which
speaks with its own model (`harness.mas.speakers`).

Memory convention (decided here, used by SFT masking and DPO prompts later): an agent's memory is
``[system: its own prompt]`` followed by its own utterances as ``assistant`` messages and the other
agents' as ``user`` messages; the first agent, who speaks first, also gets an opening ``user``
message with the question, so every memory alternates user/assistant strictly. With three or more
agents, the others' utterances since the agent last spoke are one ``user`` message, joined by a blank
line (each begins with its speaker's name, as the prompts ask); with two there is only ever one. The
reference code sends both agents' turns as ``assistant``; chat-tuned models expect alternating roles,
and with this convention "train on assistant turns" is exactly "train on the agent's own utterances".

Answers (``answer_mode``): ``generate`` parses ``<A>...</A>`` from the utterance (the paper's
protocol); ``choice``, for questions with options, gives every utterance an answer: the option its
speaker's model scores highest by log-likelihood given the speaker's memory after that utterance
(lm-eval's ``acc``; ``acc_norm``, by log-likelihood per byte, is recorded beside it).

A dialogue ends when the roster's termination rule says so (by default `agreement`: the latest
answers of every answering agent agree, `harness.mas.termination`) or at the turn cap. The
prediction is the last answer given; a dialogue without any answer predicts "".

With ``closing_turn``, a dialogue that reaches the turn cap without any answer gets one more
utterance: the agent whose turn it is (in debate, with the even caps of every preset, the solver) is
told the turns are over and asked for its answer (``CLOSING``, added to its memory's last message).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field

from harness.backends.base import Backend, Choice, Completion, Request, Sampling
from harness.config import RuntimeConfig
from harness.mas import web
from harness.mas.progress import UtteranceBar
from harness.mas.prompts import opening
from harness.mas.roster import INFORMATION_EXCHANGE, TERMINATIONS, Roster, roster_for
from harness.mas.speakers import Speakers
from harness.tasks.base import ANSWER_MODES, Question

NAMES = INFORMATION_EXCHANGE.names  # the two agents of the default rosters: Alice, Bob
# One line, last match wins, a missing ">" on the closing tag tolerated (as the reference parser).
ANSWER = re.compile(r"<A>(.*?)</A")
_keys = itertools.count()
CLOSING = "The turns are over: give your final answer now, as <A>answer</A>."


def parse_answer(text: str) -> str:
    found = ANSWER.findall(text)
    return found[-1].strip() if found else ""


def same_answer(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


@dataclass(frozen=True)
class DialogueConfig:
    max_turns: int = 10
    max_new_tokens: int = RuntimeConfig.max_new_tokens  # the utterance cap; the reward's length override fires at it
    temperature: float = 0.0
    top_p: float = 1.0
    lookahead: int = 0  # Sampling.lookahead
    answer_mode: str = "generate"  # ANSWER_MODES; choice applies to questions with options
    closing_turn: bool = False  # one closing answer turn for a dialogue capped without an answer

    @property
    def max_utterances(self) -> int:
        return self.max_turns + self.closing_turn

    def __post_init__(self):
        if self.answer_mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode must be one of {', '.join(ANSWER_MODES)}, got {self.answer_mode!r}")


@dataclass
class Utterance:
    speaker: str
    text: str
    answer: str
    completion_tokens: int
    prompt_tokens: int
    cached_tokens: int
    truncated: bool  # hit the utterance token cap
    choice_logprobs: list[float] | None = None  # answer_mode=choice: each option's log-likelihood
    answer_norm: str = ""  # answer_mode=choice: the option with the best log-likelihood per byte
    closing: bool = False  # said in the closing answer turn, after CLOSING
    observation: str | None = None  # what the environment showed after this action (a web roster's explorer)

    def record(self) -> dict:
        """Its fields for a record; an utterance without an observation writes none (the records of
        rosters without an environment are as before)."""
        out = asdict(self)
        if self.observation is None:
            del out["observation"]
        return out

    @classmethod
    def from_completion(cls, speaker: str, c: Completion, closing: bool = False) -> "Utterance":
        return cls(speaker, c.text, parse_answer(c.text), c.completion_tokens, c.prompt_tokens,
                   c.cached_tokens, c.finish_reason == "length", closing=closing)


@dataclass
class Dialogue:
    question: Question
    systems: tuple[str, ...]  # each agent's system prompt, in roster order
    utterances: list[Utterance] = field(default_factory=list)
    final_answer: str = ""
    stop: str = ""  # the termination rule's name ("agreement") | "turn_cap"
    key: str = field(default_factory=lambda: f"dlg{next(_keys)}")
    adapter: str | None = None  # the LoRA adapter the policy's agents speak with (Request.adapter)
    closing: bool = False  # capped without an answer: the next utterance is the closing turn
    roster: Roster = INFORMATION_EXCHANGE  # `start` gives the run's
    episode: object = field(default=None, repr=False, compare=False)  # a web roster's (harness.mas.web)
    episode_actions: int = field(default=0, repr=False, compare=False)  # the actions the episode has taken

    def __post_init__(self):
        if len(self.systems) != len(self.roster.agents):
            raise ValueError(f"{len(self.systems)} system prompts for the {len(self.roster.agents)} agents of "
                             f"roster {self.roster.name}")

    @property
    def done(self) -> bool:
        return bool(self.stop)

    @property
    def next_agent(self) -> int:
        return self.roster.speaker(len(self.utterances))

    def cache_key(self, agent: int) -> str:
        """The backend cache slot of the agent's memory (`Request.cache_key`)."""
        return f"{self.key}/{agent}"

    def adapter_of(self, agent: int) -> str | None:
        """The adapter the agent speaks with: the policy's, none for a frozen speaker (its own model)."""
        return None if self.roster.agents[agent].frozen else self.adapter

    def messages(self, agent: int) -> list[dict]:
        """The agent's memory as chat messages: own turns `assistant`, the others' `user` (those said
        since its last turn joined into one, each followed by the environment's observation, if any)."""
        name = self.roster.agents[agent].name
        out = [{"role": "system", "content": self.systems[agent]}]
        if agent == 0:
            out.append({"role": "user", "content": opening(self.question.question, self.roster.agents[0].role)})
        for u in self.utterances:
            if u.speaker == name:
                if u.closing:
                    out = close(out)
                out.append({"role": "assistant", "content": u.text})
            else:
                out = heard(out, u.text)
            if u.observation is not None:
                out = heard(out, u.observation)
        return close(out) if self.closing and agent == self.next_agent else out

    def add(self, utterance: Utterance, max_turns: int, closing_turn: bool = False) -> None:
        self.utterances.append(utterance)
        self.closing = False
        if utterance.answer:
            self.final_answer = utterance.answer
        if TERMINATIONS.get(self.roster.termination)(self):
            self.stop = self.roster.termination
        if not self.stop and len(self.utterances) >= max_turns:
            if closing_turn and not self.final_answer and not utterance.closing:
                self.closing = True
            else:
                self.stop = "turn_cap"

    @property
    def final_answer_norm(self) -> str:
        """acc_norm's prediction: the latest answer-bearing utterance's per-byte choice."""
        return next((u.answer_norm for u in reversed(self.utterances) if u.answer), "")

    def tokens_by_agent(self) -> dict[str, int]:
        out = dict.fromkeys(self.roster.names, 0)
        for u in self.utterances:
            out[u.speaker] += u.completion_tokens
        return out


def heard(messages: list[dict], text: str) -> list[dict]:
    """The memory with `text` from outside the agent: joined to a last `user` message, else a new one."""
    if messages[-1]["role"] == "user":
        return messages[:-1] + [{"role": "user", "content": f"{messages[-1]['content']}\n\n{text}"}]
    return messages + [{"role": "user", "content": text}]


def close(messages: list[dict]) -> list[dict]:
    """The memory with the closing instruction added to its last message (so roles still alternate)."""
    last = messages[-1]
    return messages[:-1] + [{**last, "content": f"{last['content']}\n\n{CLOSING}"}]


def start(questions: list[Question], roster: Roster | str) -> list[Dialogue]:
    """New dialogues of a roster on the questions; a name stands for that roster (a setting's name for
    the setting's default roster)."""
    roster = roster if isinstance(roster, Roster) else roster_for(roster)
    if not roster.web:
        return [Dialogue(q, roster.system_prompts(q), roster=roster) for q in questions]
    # a web dialogue starts on its site's first page, which its agents' prompts show
    return [Dialogue(q, roster.system_prompts(q, page), roster=roster, episode=episode)
            for q in questions for episode, page in [web.opened(q, roster)]]


def run_dialogues(dialogues: list[Dialogue], speakers: Backend | Speakers, cfg: DialogueConfig, seed: int,
                  progress: UtteranceBar | None = None, release: bool = True) -> list[Dialogue]:
    """Advance every dialogue to its end: one batched generate call per turn (per speaking model).

    `speakers`: the backend that speaks for every agent, or `Speakers` where a roster has frozen
    speakers. Dialogues may start part-way (a tree-search rollout replays the path it starts from);
    each speaks in turn from where it is. Each agent of each dialogue is a cache slot in its
    backend, so a turn only encodes the tokens added since that agent last spoke. `release=False`
    keeps the slots for the caller's next dialogues on the same keys, which share their system prompts.
    """
    speakers = Speakers.of(speakers)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                        lookahead=cfg.lookahead)
    if progress is not None:
        progress.begin([len(d.utterances) for d in dialogues], [d.done for d in dialogues])
    for step in itertools.count():
        active = [d for d in dialogues if not d.done]
        if not active:
            break
        agents = [d.next_agent for d in active]
        requests = [Request(d.messages(a), cache_key=d.cache_key(a), adapter=d.adapter_of(a))
                    for d, a in zip(active, agents)]
        completions = speakers.generate([d.roster.agents[a] for d, a in zip(active, agents)], requests, sampling,
                                        seed=seed * 1000 + step)
        said = [Utterance.from_completion(d.roster.agents[a].name, c, d.closing)
                for d, a, c in zip(active, agents, completions)]
        for d, a, u in zip(active, agents, said):
            if d.roster.acting(a):
                u.observation = web.observe(d, u.text)
        if cfg.answer_mode == "choice":
            choose(active, agents, said, speakers)
        if progress is not None:
            progress.spoke(len(active))
        for d, a, u in zip(active, agents, said):
            d.add(u, cfg.max_turns, cfg.closing_turn)
            if d.done:
                if release:
                    speakers.release(f"{d.key}/")
                if progress is not None:
                    progress.end(len(d.utterances))
    return dialogues


def best_option(options, scores: list[float]) -> str:
    """The option with the highest score (the first listed among ties)."""
    return options[scores.index(max(scores))]


def choose(dialogues: list[Dialogue], agents: list[int], said: list[Utterance], speakers: Speakers) -> None:
    """Set each utterance's answer to the option its speaker scores highest, with the speaker's own
    model, given the speaker's memory with the utterance: each option's continuation
    (`Question.continuations`) scored as the start of the speaker's next turn, after its name.
    Questions without options keep the parsed answer."""
    rows = [(d, a, u) for d, a, u in zip(dialogues, agents, said) if d.question.options]
    if not rows:
        return
    choices = [Choice(d.messages(a) + [{"role": "assistant", "content": u.text}], d.question.continuations,
                      prefix=f"{u.speaker}:", cache_key=d.cache_key(a), adapter=d.adapter_of(a)) for d, a, u in rows]
    scores = speakers.loglikelihood([d.roster.agents[a] for d, a, _ in rows], choices)
    for (d, _, u), scored in zip(rows, scores):
        options, texts = d.question.options, d.question.continuations
        logprobs = [lp for lp, _ in scored]
        u.choice_logprobs = logprobs
        u.answer = best_option(options, logprobs)
        u.answer_norm = best_option(options, [lp / len(t.encode()) for lp, t in zip(logprobs, texts)])
