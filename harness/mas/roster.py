"""The topology of a dialogue: a roster of agents, the order they speak in and when they stop.

An agent has a name, a role (`ROLES`: its prompt, whether it holds a slot of the question's context,
whether its answers count) and the model that speaks for it: None for the run's policy, the model a
run trains, else a frozen speaker named by model (config key `speaker_models`, "Bob=tiny-random").
Agents speak round robin in roster order, the first agent first. The roster's termination rule
(`TERMINATIONS`, `harness.mas.termination`) says when a dialogue ends before its turn cap.

Context slots: a task deals its context into one slot per context-holding agent (`Roster.slots`,
the informants, in roster order; `Task(slots=...)`); solvers and critics hold the whole question
and no slot. Answers that count: in choice mode every utterance bears an answer (the option its
speaker scores highest), so every agent answers; in generate mode the agents whose role answers
(informants and solvers; critics are told not to).

Today's three settings are three rosters: `information_exchange` (Alice and Bob, informants),
`debate` (Alice solves, Bob criticises) and `web` (WebWalker's explorer and critic on a site). A
task's setting names its default roster; the config key `roster` names another
(`information_exchange_3`: Alice, Bob and Carol, informants).

An environment between turns: a roster with `web` limits acts on a served site. Each utterance of
an agent whose role acts is an action there (`harness.mas.web`), and what the site shows back is
the utterance's observation, which every agent reads after it; the site's first page is each web
role's `${information}`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from string import Template

from harness.config import WebConfig
from harness.errors import HarnessError
from harness.mas import prompts
from harness.registry import Registry
from harness.tasks import TASKS, get_task
from harness.tasks.base import Question, Task


@dataclass(frozen=True)
class Role:
    pair: Template  # its prompt in a roster of two
    group: Template  # its prompt among three or more
    holds_context: bool  # gets a slot of the question's context
    answers: bool  # its answers count in generate mode (in choice mode every agent's do)
    acts: bool = False  # each utterance is an action in the roster's environment


ROLES: Registry[Role] = Registry("role")
ROLES.register("informant", Role(prompts.INFORMATION_EXCHANGE, prompts.GROUP["informant"], True, True))
ROLES.register("solver", Role(prompts.DEBATE_SOLVER, prompts.GROUP["solver"], False, True))
ROLES.register("critic", Role(prompts.DEBATE_CRITIC, prompts.GROUP["critic"], False, False))
ROLES.register("explorer", Role(prompts.WEB["explorer"], prompts.WEB["explorer"], False, False, acts=True))
ROLES.register("web_critic", Role(prompts.WEB["web_critic"], prompts.WEB["web_critic"], False, True))

# When a dialogue ends before its turn cap: `rule(dialogue) -> bool`, asked after every utterance;
# the dialogue's `stop` is then the rule's name.
TERMINATIONS: Registry = Registry("termination rule")
TERMINATIONS.register("agreement", "harness.mas.termination:agreement")
TERMINATIONS.register("answer", "harness.mas.termination:first_answer")


@dataclass(frozen=True)
class Agent:
    name: str
    role: str  # a ROLES name
    model: str | None = None  # None: the run's policy speaks for it; else this frozen model

    @property
    def frozen(self) -> bool:
        return self.model is not None


@dataclass(frozen=True)
class Roster:
    name: str
    agents: tuple[Agent, ...]
    termination: str = "agreement"  # a TERMINATIONS name
    web: WebConfig | None = None  # the agents act on a served site within these limits; None: no environment

    def __post_init__(self):
        names = self.names
        if len(names) < 2 or len(set(names)) != len(names):
            raise HarnessError(f"roster {self.name}: needs two or more agents with distinct names, got {list(names)}")
        for agent in self.agents:
            ROLES.get(agent.role)  # an unknown name fails with the nearest valid ones
        if self.termination not in TERMINATIONS:  # checked by name: the rules load on first use
            TERMINATIONS.get(self.termination)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.agents)

    def speaker(self, turn: int) -> int:
        """The agent who says utterance `turn` (0-based): round robin from the first agent."""
        return turn % len(self.agents)

    @property
    def slots(self) -> int:
        """Context slots a task deals for this roster: one per context-holding agent."""
        return sum(ROLES.get(a.role).holds_context for a in self.agents)

    def answering(self, scored: bool) -> tuple[str, ...]:
        """The agents whose answers count: all of them when utterances are scored by choice, else
        those whose role answers."""
        return tuple(a.name for a in self.agents if scored or ROLES.get(a.role).answers)

    @property
    def policy_agents(self) -> tuple[int, ...]:
        """The agents the run's policy speaks for: only their turns are trained on (SFT, DPO pairs)."""
        return tuple(i for i, a in enumerate(self.agents) if not a.frozen)

    @property
    def frozen_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.model for a in self.agents if a.frozen))

    def acting(self, agent: int) -> bool:
        """Whether the agent's utterances are actions in the roster's environment."""
        return self.web is not None and ROLES.get(self.agents[agent].role).acts

    def system_prompts(self, question: Question, page: str = "") -> tuple[str, ...]:
        """Each agent's system prompt for a question: its role's prompt, with its own context slot
        (a roster without context-holding agents leaves a question's context unread), or in a web
        roster the site's first `page`."""
        contexts = question.contexts or ((),) * self.slots  # a question without any context
        if self.slots and len(contexts) != self.slots:
            raise HarnessError(f"question {question.id}: its context is dealt into {len(contexts)} slots, but roster "
                               f"{self.name} has {self.slots} context-holding agents (load the task with "
                               f"slots={self.slots})")
        slots = iter(contexts)
        out = []
        for agent in self.agents:
            role = ROLES.get(agent.role)
            others = [n for n in self.names if n != agent.name]
            information = "\n".join(next(slots)) if role.holds_context else page
            out.append((role.pair if len(others) == 1 else role.group).substitute(
                name=agent.name, partner=others[0], partners=spoken_list(others), question=question.question,
                information=information or prompts.NO_INFORMATION))
        return tuple(out)

    def with_speakers(self, speaker_models: str | None) -> "Roster":
        """The roster with frozen speakers from a `speaker_models` value: "Bob=tiny-random,Carol=m"."""
        if not speaker_models:
            return self
        models: dict[str, str] = {}
        for item in speaker_models.split(","):
            name, sep, model = (part.strip() for part in item.partition("="))
            if not sep or not model:
                raise HarnessError(f"speaker_models: {item.strip()!r}: expected agent=model")
            if name not in self.names:
                raise HarnessError(f"speaker_models: roster {self.name} has no agent {name!r} "
                                   f"(agents: {', '.join(self.names)})")
            if name in models:
                raise HarnessError(f"speaker_models: agent {name} is given twice")
            models[name] = model
        if len(models) == len(self.agents):
            raise HarnessError(f"speaker_models: every agent of roster {self.name} is frozen; leave at least one "
                               "to the policy (the run's model)")
        return replace(self, agents=tuple(replace(a, model=models.get(a.name)) for a in self.agents))


def spoken_list(names: list[str]) -> str:
    """ "Bob", "Bob and Carol", "Bob, Carol and Dan"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


INFORMATION_EXCHANGE = Roster("information_exchange", (Agent("Alice", "informant"), Agent("Bob", "informant")))
DEBATE = Roster("debate", (Agent("Alice", "solver"), Agent("Bob", "critic")))

ROSTERS: Registry[Roster] = Registry("roster")
ROSTERS.register("information_exchange", INFORMATION_EXCHANGE)
ROSTERS.register("debate", DEBATE)
ROSTERS.register("web", Roster("web", (Agent("Explorer", "explorer"), Agent("Critic", "web_critic")),
                                termination="answer", web=WebConfig()))
ROSTERS.register("information_exchange_3", Roster(
    "information_exchange_3", (Agent("Alice", "informant"), Agent("Bob", "informant"), Agent("Carol", "informant"))))


def roster_for(setting: str, name: str | None = None, speaker_models: str | None = None) -> Roster:
    """The roster `name`, by default the setting's own (a setting's default roster has its name),
    with the frozen speakers of `speaker_models`."""
    if name is None and setting not in ROSTERS:
        raise HarnessError(f"no roster for the {setting!r} setting; name one of: {', '.join(ROSTERS.names())}")
    return ROSTERS.get(name or setting).with_speakers(speaker_models)


def task_and_roster(cfg, task: str | None = None) -> tuple[Task, Roster]:
    """The config's task (or `task`), dealing its context into one slot per context-holding agent of
    the config's roster, and that roster (keys `roster`, `speaker_models`, a web roster's `web`
    limits; `context_mode`, `seed`)."""
    name = task or cfg.task
    roster = roster_for(TASKS.get(name).setting, cfg.roster, cfg.speaker_models)
    if roster.web is not None:
        roster = replace(roster, web=cfg.web)
    return get_task(name, context_mode=cfg.context_mode, seed=cfg.seed, slots=roster.slots), roster
