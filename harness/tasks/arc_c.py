"""ARC-Challenge.

dataset: allenai/ai2_arc, config ARC-Challenge (Clark et al., 2018)
splits: train, validation, test
setting: debate: Alice solves, Bob criticises without answering
metric: accuracy; the answer may be the option text or its letter
licence: CC BY-SA 4.0
"""

from harness.tasks.base import Question, Recipe, RowError, Task, options_text, require


class ARCChallenge(Task):
    name = "arc_c"
    dataset = "allenai/ai2_arc"
    hub_config = "ARC-Challenge"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    setting = "debate"
    metric = "accuracy"
    recipe = Recipe(lambda1=-0.5, lambda2=0.6, dpo_epsilon=0.45, dpo_beta=0.1, sft_epsilon=0.6)
    choices = True
    licence = "CC BY-SA 4.0"
    sizes = "1,119 / 299 / 1,172"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "id", "question", "choices.text", "choices.label", "answerKey")
        texts, labels = row["choices"]["text"], row["choices"]["label"]
        if row["answerKey"] not in labels:
            raise RowError(f"answerKey {row['answerKey']!r} is not among the labels {labels}")
        return Question(
            id=row["id"], question=row["question"] + options_text(texts),
            golds=(texts[labels.index(row["answerKey"])],), options=tuple(texts),
        )
