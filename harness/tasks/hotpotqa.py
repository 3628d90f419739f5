"""HotpotQA (distractor setting).

dataset: hotpotqa/hotpot_qa, config distractor (Yang et al., 2018)
splits: train <- train; validation <- validation[1000:]; test <- validation[:1000] (as Optima)
setting: information exchange: supporting paragraphs dealt round robin in random order, each
    distractor to a random agent
metric: SQuAD token F1 against the answer
licence: CC BY-SA 4.0
"""

from harness.tasks.base import QA_RECIPE, Question, RowError, Task, require


class HotpotQA(Task):
    name = "hotpotqa"
    dataset = "hotpotqa/hotpot_qa"
    hub_config = "distractor"
    hub_splits = {"train": "train", "validation": "validation[1000:]", "test": "validation[:1000]"}
    setting = "information_exchange"
    metric = "f1"
    recipe = QA_RECIPE
    licence = "CC BY-SA 4.0"
    sizes = "90,447 / 6,405 / 1,000"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "id", "question", "answer", "context.title", "context.sentences", "supporting_facts.title")
        titles, sentences = row["context"]["title"], row["context"]["sentences"]
        if len(titles) != len(sentences):
            raise RowError("context.title and context.sentences differ in length")
        paragraphs = {
            t: (s[0] if self.context_mode == "first_sentence" else "".join(s)).strip()
            for t, s in zip(titles, sentences) if s
        }
        supporting = list(dict.fromkeys(t for t in row["supporting_facts"]["title"] if t in paragraphs))
        return Question(
            id=row["id"], question=row["question"], golds=(row["answer"],),
            contexts=deal(self.rng(row["id"]), paragraphs, supporting, self.slots, shuffle_supporting=True),
            meta={"type": row.get("type"), "level": row.get("level")},
        )


def deal(rng, paragraphs: dict[str, str], supporting: list[str], slots: int, shuffle_supporting: bool):
    """Supporting paragraphs go round robin to the `slots` agents so that each holds part of the
    answer; distractors go to a random agent. Paragraphs are rendered `title: text`."""
    if not slots:
        return ()
    if shuffle_supporting:
        supporting = rng.sample(supporting, len(supporting))
    agents: list[list[str]] = [[] for _ in range(slots)]
    for i, title in enumerate(supporting):
        agents[i % slots].append(f"{title}: {paragraphs[title]}")
    for title, text in paragraphs.items():
        if title not in supporting:
            agents[rng.randrange(slots)].append(f"{title}: {text}")
    return tuple(map(tuple, agents))
