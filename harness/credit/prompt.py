"""The coach's prompt, versioned: what MAPPA's coach is shown of one action, in one user message.

As MAPPA's coach, it sees the agent's role, what the agent saw before acting and what it said, and
answers `PROCESS_SCORE: x` with x in [0, 10]. Unlike MAPPA's (whose verifier-role coach checks the
answer against the ground truth), it never sees the gold answer unless `coach_sees_gold` is on, a
recorded setting. Any change to the wording, the memory's rendering or the reply's format is a new
`VERSION`; the prompt's hash is part of every cached score's key, so a changed prompt never reuses
scores of another.
"""

from __future__ import annotations

import hashlib

VERSION = "mappa-coach-v1"

TEMPLATE = """You are a coach. A team of agents answers a question by talking in turns; you score ONE action of ONE agent.

The agent: {agent} ({role}).

What the agent knew before acting: its instructions and information, then the conversation so far.
{agent_input}

What the agent said:
{agent_output}
{gold}
Score the action by what the agent knew: is what it says true to its information, useful to the team's final answer, in its role and in the answer format it was asked for? 0 is a harmful or useless action, 10 the best action possible.

Reply with one line:
PROCESS_SCORE: <a number from 0 to 10>"""

GOLD = "\nThe correct answer, for you only (the agent does not know it): {gold}\n"

# How a memory's messages are shown to the coach: the agent's own turns and the others', by role.
SPEAKERS = {"system": "[instructions and information]", "user": "[heard]", "assistant": "[said before]"}


def render_memory(messages: list[dict]) -> str:
    return "\n\n".join(f"{SPEAKERS[m['role']]}\n{m['content']}" for m in messages)


def coach_message(agent: str, role: str, memory: list[dict], said: str, gold: str | None) -> str:
    """The coach's one user message for one action; `gold` None unless the coach may see it."""
    return TEMPLATE.format(agent=agent, role=role, agent_input=render_memory(memory), agent_output=said,
                           gold=GOLD.format(gold=gold) if gold is not None else "")


def prompt_hash() -> str:
    """sha256 of the version and everything that makes the coach's message."""
    text = "\x00".join([VERSION, TEMPLATE, GOLD, *(f"{k}={v}" for k, v in sorted(SPEAKERS.items()))])
    return hashlib.sha256(text.encode()).hexdigest()
