"""The judge: an optional model that grades each evaluated answer CORRECT or INCORRECT, WebWalkerQA's
official metric.

WebWalkerQA scores with LangChain's `cot_qa` evaluator (`load_evaluator("cot_qa")`, called with the
question as input, the gold answer as reference and the agents' answer as prediction): the template
below is that evaluator's prompt (LangChain, MIT licence), the gold answer in its CONTEXT slot as
LangChain puts the reference there. The reply is read by LangChain's rule: `GRADE: CORRECT|INCORRECT`
anywhere, else CORRECT or INCORRECT as its first or last word; a reply with neither is unparsed, and
counts as incorrect, the parse rate recorded beside the accuracy. WebWalker's judge is GPT-4o;
a judge here is any model on any backend (`judge=MODEL`, `judge_backend=`), named wherever its column
is shown: scores under another judge are not the paper's. Replies are cached (`harness.backends.grader`)
in the section's `cache` directory, else `$HARNESS_CACHE/judge`; any change to the template is a new
`VERSION`, whose hash keys the cache.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass

from harness.backends.grader import Grader

VERSION = "langchain-cot_qa-v1"

TEMPLATE = """You are a teacher grading a quiz.
You are given a question, the context the question is about, and the student's answer. You are asked to score the student's answer as either CORRECT or INCORRECT, based on the context.
Write out in a step by step manner your reasoning to be sure that your conclusion is correct. Avoid simply stating the correct answer at the outset.

Example Format:
QUESTION: question here
CONTEXT: context the question is about here
STUDENT ANSWER: student's answer here
EXPLANATION: step by step reasoning here
GRADE: CORRECT or INCORRECT here

Please remember to grade them based on being factually accurate. Begin!

QUESTION: {query}
CONTEXT: {context}
STUDENT ANSWER: {result}
EXPLANATION:"""

GRADE = re.compile(r"grade:\s*(correct|incorrect)", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    parsed: bool
    reply: str


def parse(reply: str) -> bool | None:
    """CORRECT -> True, INCORRECT -> False, None where the reply says neither (LangChain's rule)."""
    found = GRADE.search(reply)
    if found:
        return found.group(1).upper() == "CORRECT"
    words = [w.strip(string.punctuation).upper() for w in reply.split()]
    for word in words[:1] + words[-1:]:
        if word in ("CORRECT", "INCORRECT"):
            return word == "CORRECT"
    return None


def prompt_hash() -> str:
    return hashlib.sha256("\x00".join([VERSION, TEMPLATE]).encode()).hexdigest()


def message(question: str, golds: list[str], prediction: str) -> list[dict]:
    """The judge's one user message; several gold answers are shown as alternatives."""
    return [{"role": "user", "content": TEMPLATE.format(query=question, context=" OR ".join(golds),
                                                        result=prediction)}]


class Judge:
    """The judge a section's `judge*` keys name."""

    def __init__(self, grader: Grader):
        self.grader = grader

    @classmethod
    def build(cls, cfg) -> "Judge":
        return cls(Grader.build("judge", cfg, cfg.judge, cfg.judge_backend, prompt_hash(), cfg.judge_max_new_tokens))

    def info(self) -> dict:
        return {**self.grader.info(), "prompt_version": VERSION, "spent": dict(self.grader.spent)}

    def grade(self, items: list[tuple[str, list[str], str]]) -> list[Verdict]:
        """One verdict per (question, golds, prediction); an empty prediction is incorrect, unasked (unparsed)."""
        asked = [i for i, (_, _, prediction) in enumerate(items) if prediction]
        replies = dict(zip(asked, self.grader.replies([message(*items[i]) for i in asked])))
        out = []
        for i in range(len(items)):
            found = parse(replies[i]) if i in replies else None
            out.append(Verdict(bool(found), found is not None, replies.get(i, "")))
        return out
