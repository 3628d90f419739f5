"""WebWalkerQA.

dataset: callanwu/WebWalkerQA (Wu et al., 2025); a test-only benchmark
splits: validation <- silver[:1000]; test <- main
setting: web: the agents navigate the site from `root_url`; the environment is not in this
    release, so only loading and the metric are available
metric: SQuAD token F1 against the answer
licence: Apache-2.0
"""

from harness.tasks.base import QA_RECIPE, Question, Task, require, row_hash


class WebWalker(Task):
    name = "webwalker"
    dataset = "callanwu/WebWalkerQA"
    hub_splits = {"validation": "silver[:1000]", "test": "main"}
    setting = "web"
    metric = "f1"
    recipe = QA_RECIPE  # no reference recipe: QA's
    licence = "Apache-2.0"
    sizes = "- / silver 14k / 680"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "question", "answer", "root_url")
        return Question(
            id=row.get("id") or row_hash(row), question=row["question"], golds=(row["answer"],),
            meta={"root_url": row["root_url"], **(row.get("info") or {})},
        )
