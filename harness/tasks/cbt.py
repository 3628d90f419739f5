"""Children's Book Test, common nouns (CBT-CN).

dataset: cam-cst/cbt, config CN (Hill et al., 2016); items built by `harness data build-cbt` are
    read the same way from a data directory; with none, items built once from the books shipped
    with the harness (harness/data/books/), or the project-written sample without spaCy
splits: train, validation, test
setting: information exchange: the context sentences dealt in consecutive blocks, the first 10 to
    Alice and the last 10 to Bob (with three informants: 6, 7 and 7)
metric: SQuAD token F1 against the answer word (the reference scores CBT with F1)
choice continuation (answer_mode=choice): the query sentence with the blank filled by the option
licence: GFDL
"""

from harness.tasks.base import Question, Recipe, RowError, Task, blocks, options_text, require, row_hash


class CBT(Task):
    name = "cbt"
    dataset = "cam-cst/cbt"
    hub_config = "CN"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    setting = "information_exchange"
    metric = "f1"
    recipe = Recipe(lambda1=-0.6, lambda2=1.0, dpo_epsilon=0.4, dpo_beta=0.7, sft_epsilon=0.5)
    choices = True
    licence = "GFDL"
    sizes = "120,769 / 2,000 / 2,500"

    def default_data_dir(self):
        """Items built once from the public-domain books shipped with the harness, into the cache."""
        from harness.data.shipped import shipped_cbt_dir

        return shipped_cbt_dir()

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "sentences", "question", "answer", "options")
        sentences, options = row["sentences"], row["options"]
        for key, value in (("sentences", sentences), ("options", options)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RowError(f"{key} must be a list of strings, got {type(value).__name__}")
        if row["answer"] not in options:
            raise RowError(f"answer {row['answer']!r} is not among the options")
        return Question(
            id=row.get("id") or row_hash(row), question=row["question"] + options_text(options),
            golds=(row["answer"],), contexts=blocks(sentences, self.slots),
            options=tuple(options),
            # lm-eval's CBT scoring: the query sentence with the blank filled by each option
            continuations=tuple(" " + row["question"].replace("XXXXX", o) for o in options),
        )
