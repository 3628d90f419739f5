"""2WikiMultihopQA.

dataset: the original release JSON (Ho et al., 2020); it has no official hub copy, so it is read
    from a data directory only (`<data_dir>/2wmh/{train,validation,test}.jsonl`, one record a line)
splits: train <- train; validation and test <- disjoint parts of dev (as ../shared/data lays them out)
setting: information exchange: supporting paragraphs dealt round robin in file order, distractors
    to a random agent (as the reference loader)
metric: SQuAD token F1 against the answer
licence: Apache-2.0
"""

from harness.tasks.base import Question, Recipe, RowError, Task, require
from harness.tasks.hotpotqa import deal


class TwoWikiMultihopQA(Task):
    name = "2wmh"
    dataset = None
    hub_splits = {}
    setting = "information_exchange"
    metric = "f1"
    recipe = Recipe(lambda1=-0.6, lambda2=1.0, dpo_epsilon=0.4, dpo_beta=0.5, sft_epsilon=0.5)
    licence = "Apache-2.0"
    sizes = "167,454 / 12,576 (dev)"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "_id", "question", "answer", "context", "supporting_facts")
        paragraphs = {}
        for entry in row["context"]:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
                raise RowError("context entries must be [title, [sentence, ...]]")
            title, sents = entry
            text = sents[0] if self.context_mode == "first_sentence" and sents else " ".join(sents)
            paragraphs[title] = text.strip()
        supporting = list(dict.fromkeys(f[0] for f in row["supporting_facts"] if f and f[0] in paragraphs))
        return Question(
            id=row["_id"], question=row["question"], golds=(row["answer"],),
            contexts=deal(self.rng(row["_id"]), paragraphs, supporting, self.slots, shuffle_supporting=False),
            meta={"type": row.get("type")},
        )
