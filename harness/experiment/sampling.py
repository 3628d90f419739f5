"""The SFT data stage's sampled dialogues, a batch at a time, each batch journaled as it ends
(`harness.records.journal`), so a killed stage samples only the batches it had not finished.

`sft.samples` dialogues per question, run the policy backend's `batch_size` dialogues at a time, a
batch's sampling seeded by the stage's seed and the batch's place (the batches and seeds the stage
has always had), so a batch's dialogues do not depend on the batches before it. A finished dialogue
is journaled as its record (`record`) and read back as a `Dialogue` (`restore`), whether it was
sampled now or before a kill.
"""

from __future__ import annotations

from pathlib import Path

from harness.mas.dialogue import Dialogue, DialogueConfig, Utterance, run_dialogues, start
from harness.mas.progress import UtteranceBar
from harness.mas.roster import Roster
from harness.mas.speakers import Speakers
from harness.records.cost import spent
from harness.records.journal import Journal, key
from harness.tasks.base import Question


def record(d: Dialogue) -> dict:
    """What a finished dialogue's SFT example and reward read: its prompts, utterances, answer, stop."""
    return {"question_id": d.question.id, "systems": list(d.systems), "utterances": [u.record() for u in d.utterances],
            "final_answer": d.final_answer, "stop": d.stop}


def restore(row: dict, question: Question, roster: Roster) -> Dialogue:
    """The finished dialogue of `record` (a web roster's episode is replayed when asked for)."""
    return Dialogue(question, tuple(row["systems"]), [Utterance(**u) for u in row["utterances"]],
                    row["final_answer"], row["stop"], roster=roster)


def sample_groups(journal: Path, identity, questions: list[Question], roster: Roster, speakers: Speakers,
                  samples: int, cfg: DialogueConfig, seed: int) -> tuple[list[list[Dialogue]], list[dict]]:
    """(per question, its `samples` sampled dialogues; each batch's backend usage), the batches
    journaled at `journal`. `identity`: what else the dialogues depend on (config, models), in the
    batches' keys."""
    size = speakers.policy.batch_size
    flat = [q for q in questions for _ in range(samples)]
    starts = range(0, len(flat), size)
    keys = [key("sft_data", identity, seed, i, [q.id for q in flat[i:i + size]]) for i in starts]
    batches = Journal(journal, keys)
    with UtteranceBar(len(flat), cfg.max_utterances, "sft data",
                      done=sum(len(flat[starts[i]:starts[i] + size]) for i in batches.finished)) as bar:
        def batch(b: int) -> dict:
            i, policy = starts[b], speakers.policy
            before = policy.usage.as_dict()
            dialogues = run_dialogues(start(flat[i:i + size], roster), speakers, cfg, seed * 1000 + i, bar)
            return {"dialogues": [record(d) for d in dialogues], "usage": spent(before, policy.usage.as_dict())}

        done = batches.run(batch)
    dialogues = [restore(row, q, roster) for row, q in zip((r for b in done for r in b["dialogues"]), flat)]
    return [dialogues[i:i + samples] for i in range(0, len(dialogues), samples)], [b["usage"] for b in done]
