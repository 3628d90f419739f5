"""When a dialogue ends before its turn cap: the termination rules a roster names (`TERMINATIONS`).

`agreement` (the default): after an answer-bearing utterance, the dialogue ends when its last
k = max(2, |answering agents|) answer-bearing utterances all give the same answer and among them
every answering agent has spoken (`Roster.answering`: every agent in choice mode, else the agents
whose role answers). Utterances without an answer, such as the debate critic's, neither count nor
break the chain.

With two agents this is the rule of the two settings before rosters, "two consecutive
answer-bearing utterances agree", except where that let one agent end the dialogue alone:
- information exchange, generate mode: one agent repeating its own answer while its partner gives
  none no longer ends the dialogue; both must give it, as their prompt says ("the conversation ends
  when both of you give the same answer");
- debate, generate mode: the critic, told not to answer, giving one answer twice while the solver
  gives none in between no longer ends it (the solver must give it).
In choice mode every utterance bears an answer, so the last two are one of each agent's and nothing
changes; in debate's generate mode the solver's own repeated answer still ends the dialogue (the
critic does not answer), as before.
"""

from __future__ import annotations

from harness.mas.dialogue import Dialogue, same_answer


def agreement(d: Dialogue) -> bool:
    last = d.utterances[-1]
    if not last.answer:
        return False
    answering = d.roster.answering(scored=last.choice_logprobs is not None)
    k = max(2, len(answering))
    recent = [u for u in d.utterances if u.answer][-k:]
    return (len(recent) == k and all(same_answer(u.answer, last.answer) for u in recent)
            and set(answering) <= {u.speaker for u in recent})


def first_answer(d: Dialogue) -> bool:
    """`answer` (the web roster's): the dialogue ends at the first answer of an answering agent (the
    critic, who answers once the pages seen hold it); an explorer's stray answer does not end it."""
    last = d.utterances[-1]
    return bool(last.answer) and last.speaker in d.roster.answering(scored=last.choice_logprobs is not None)
