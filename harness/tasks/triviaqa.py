"""TriviaQA (reading comprehension, web search snippets).

dataset: mandarjoshi/trivia_qa, config rc (Joshi et al., 2017)
splits: train <- train; validation <- validation[1000:]; test <- validation[:1000] (as Optima)
setting: information exchange: the search-result descriptions, shuffled and dealt round robin;
    rows without snippets (rc.nocontext) leave every agent with its own knowledge only
metric: SQuAD token F1, max over the answer aliases
licence: Apache-2.0 (dataset card: unknown)
"""

from harness.tasks.base import Question, Recipe, RowError, Task, require, round_robin


class TriviaQA(Task):
    name = "triviaqa"
    dataset = "mandarjoshi/trivia_qa"
    hub_config = "rc"
    hub_splits = {"train": "train", "validation": "validation[1000:]", "test": "validation[:1000]"}
    setting = "information_exchange"
    metric = "f1"
    recipe = Recipe(lambda1=-0.6, lambda2=1.0, dpo_epsilon=0.43, dpo_beta=0.7, sft_epsilon=0.6)
    licence = "Apache-2.0"
    sizes = "138,384 / 16,944 / 1,000"

    def to_question(self, row: dict, split: str) -> Question:
        require(row, "question_id", "question", "answer.aliases")
        answer = row["answer"]
        aliases = [a for a in dict.fromkeys([*answer["aliases"], answer.get("value") or ""]) if a]
        if not aliases:
            raise RowError("answer.aliases is empty")
        snippets = [d for d in (row.get("search_results") or {}).get("description", []) if d]
        rng = self.rng(row["question_id"])
        snippets = rng.sample(snippets, len(snippets))
        return Question(
            id=row["question_id"], question=row["question"], golds=tuple(aliases),
            contexts=round_robin(snippets, self.slots),
        )
