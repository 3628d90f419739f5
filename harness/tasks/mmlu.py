"""MMLU.

dataset: cais/mmlu, config all (Hendrycks et al., 2021)
splits: train <- auxiliary_train; validation <- validation; test <- test
setting: debate: Alice solves, Bob criticises without answering. The question ends with the option
    list as for ARC-C; the reference's cloze wording ("to fill in the _") on every item is not copied
metric: accuracy; the answer may be the option text or its letter
licence: MIT
"""

from harness.tasks.base import Question, Recipe, RowError, Task, options_text, require, row_hash


class MMLU(Task):
    name = "mmlu"
    dataset = "cais/mmlu"
    hub_config = "all"
    hub_splits = {"train": "auxiliary_train", "validation": "validation", "test": "test"}
    setting = "debate"
    metric = "accuracy"
    # DITS's mmlu_DI weights
    recipe = Recipe(lambda1=-0.6, lambda2=1.0, dpo_epsilon=0.45, dpo_beta=0.1, sft_epsilon=0.7)
    choices = True
    licence = "MIT"
    sizes = "99,842 / 1,531 / 14,042"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "question", "choices", "answer")
        choices, answer = row["choices"], row["answer"]
        if not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise RowError(f"answer {answer!r} is not an index into the {len(choices)} choices")
        return Question(
            id=row.get("id") or row_hash(row), question=row["question"] + options_text(choices),
            golds=(choices[answer],), options=tuple(choices), meta={"subject": row.get("subject")},
        )
