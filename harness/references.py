"""Reference rows for tasks whose agents each hold part of a story and pick an option (CBT): where
the floor is, whether the dialogue adds anything, and where the top is.

- `chance`: the expected score of a uniform guess, 1 / options.
- `most_frequent_option`: the option that occurs most often in the whole story (ties: the first
  listed), no model.
- `one_agent`: the policy alone with the first agent's slot of the story (with two agents, Alice's
  half), its choice by log-likelihood as in `answer_mode=choice`, no dialogue.
- `whole_story`: the policy alone with the whole story: the ceiling a dialogue that passed on every
  fact would approach.

The two model rows share one single-agent prompt (`SOLO`), so they differ only in what the model
is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from string import Template

from harness.backends.base import Backend, Choice
from harness.mas.dialogue import best_option
from harness.mas.prompts import NO_INFORMATION
from harness.registry import Registry
from harness.tasks.base import Question

# One model alone with a story: no partner, no protocol.
SOLO = Template("""\
Answer the question below from the story.

Question: ${question}

Story:
${information}""")

REFERENCES: Registry[Callable[[list[Question], Backend], list[float]]] = Registry("reference row")


def applies(task) -> bool:
    """Reference rows need options to pick and a story split between agents."""
    return task.choices and task.setting == "information_exchange"


def _correct(question: Question, option: str) -> float:
    return float(option in question.golds)


@REFERENCES.register("chance")
def chance(questions: list[Question], backend: Backend) -> list[float]:
    return [1 / len(q.options) for q in questions]


@REFERENCES.register("most_frequent_option")
def most_frequent_option(questions: list[Question], backend: Backend) -> list[float]:
    out = []
    for q in questions:
        words = re.findall(r"\w+", " ".join(sum(q.contexts, ())).casefold())
        counts = [words.count(o.casefold()) for o in q.options]
        out.append(_correct(q, best_option(q.options, counts)))
    return out


def solo(question: str, information) -> str:
    return SOLO.substitute(question=question, information="\n".join(information) or NO_INFORMATION)


def _alone(questions: list[Question], backend: Backend, story: Callable[[Question], tuple[str, ...]]) -> list[float]:
    choices = [Choice([{"role": "system", "content": solo(q.question, story(q))}], q.continuations)
               for q in questions]
    return [_correct(q, best_option(q.options, [lp for lp, _ in scored]))
            for q, scored in zip(questions, backend.loglikelihood(choices))]


@REFERENCES.register("one_agent")
def one_agent(questions: list[Question], backend: Backend) -> list[float]:
    return _alone(questions, backend, lambda q: q.contexts[0])


@REFERENCES.register("whole_story")
def whole_story(questions: list[Question], backend: Backend) -> list[float]:
    return _alone(questions, backend, lambda q: sum(q.contexts, ()))


def reference_rows(questions: list[Question], backend: Backend) -> dict[str, dict]:
    """Every reference row on `questions`: its mean and per-item scores (by question id)."""
    out = {}
    for name in REFERENCES.names():
        scores = REFERENCES.get(name)(questions, backend)
        out[name] = {"mean": sum(scores) / len(scores), "n": len(scores),
                     "items": {q.id: s for q, s in zip(questions, scores)}}
    return out
