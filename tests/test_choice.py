"""answer_mode=choice: an utterance's answer is the option its speaker scores highest by log-likelihood."""

import json

import pytest
import torch

from harness.backends import Choice
from harness.evaluation import evaluate
from harness.mas.dialogue import NAMES, DialogueConfig, Utterance, run_dialogues, start
from harness.synth.reward import RewardConfig, reward
from harness.tasks import get_task
from harness.tasks.base import Question
from harness.tasks.metrics import score


def independent_logprob(backend, messages, prefix, continuation) -> float:
    """The continuation's summed log-probability from one fresh forward pass over the whole text."""
    tok = backend.tokenizer
    context = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix,
                  add_special_tokens=False).input_ids
    cont = tok(continuation, add_special_tokens=False).input_ids
    ids = torch.tensor([context + cont])
    with torch.inference_mode():
        logprobs = torch.log_softmax(backend.model(input_ids=ids).logits[0].float(), -1)
    return sum(logprobs[len(context) - 1 + i, t].item() for i, t in enumerate(cont))


@pytest.mark.parametrize("task_name", ["cbt", "arc_c"])
def test_the_chosen_option_is_the_best_independent_loglikelihood(tiny_fitted, task_name):
    task = get_task(task_name)
    questions = task.load("test", limit=3)
    dialogues = run_dialogues(start(questions, task.setting), tiny_fitted,
                              DialogueConfig(max_turns=3, max_new_tokens=16, answer_mode="choice"), seed=0,
                              release=False)
    checked = 0
    for d in dialogues:
        for i, u in enumerate(d.utterances):
            agent = NAMES.index(u.speaker)
            before = d.utterances[:i]
            d.utterances, rest = before, d.utterances  # the speaker's memory as it was after this utterance
            memory = d.messages(agent) + [{"role": "assistant", "content": u.text}]
            d.utterances = rest
            expected = [independent_logprob(tiny_fitted, memory, f"{u.speaker}:", c) for c in d.question.continuations]
            assert u.choice_logprobs == pytest.approx(expected, abs=2e-3)
            assert u.answer == d.question.options[max(range(len(expected)), key=expected.__getitem__)]
            checked += 1
        tiny_fitted.release(f"{d.key}/")
    assert checked >= 6


def test_loglikelihood_is_the_same_with_and_without_a_cached_prefix(tiny_fitted):
    messages = [{"role": "system", "content": "You answer questions."},
                {"role": "user", "content": "Which is a colour: red or table?"}]
    choice = Choice(messages, (" red", " table", " a long answer of several tokens"), prefix="Alice:",
                    cache_key="choice-test")
    fresh = tiny_fitted.loglikelihood([choice])[0]
    from harness.backends import Request, Sampling

    tiny_fitted.generate([Request(messages, cache_key="choice-test")], Sampling(max_new_tokens=4))
    before = tiny_fitted.usage.cached_tokens
    cached = tiny_fitted.loglikelihood([choice])[0]
    tiny_fitted.release("choice-test")
    assert tiny_fitted.usage.cached_tokens > before  # the slot's prefix was reused
    assert [n for _, n in cached] == [n for _, n in fresh] and [n for _, n in fresh][2] > 1
    assert [lp for lp, _ in cached] == pytest.approx([lp for lp, _ in fresh], abs=1e-3)


def test_cbt_continuations_fill_the_blank_and_other_tasks_default_to_the_option():
    cbt = get_task("cbt").load("test", limit=1)[0]
    assert all("XXXXX" not in c and o in c for o, c in zip(cbt.options, cbt.continuations))
    arc = get_task("arc_c").load("test", limit=1)[0]
    assert arc.continuations == tuple(f" {o}" for o in arc.options)
    assert get_task("hotpotqa").answer_mode("choice") == "generate"
    assert get_task("cbt").answer_mode("choice") == "choice"


def test_evaluation_reward_agreement_and_influence_read_the_same_answer(tmp_path):
    from harness.config import LoraConfig, SelectConfig
    from harness.dits.influence import ReferencePath

    result = evaluate(task="arc_c", model="tiny-fitted", split="validation", limit=4, max_new_tokens=16,
                      max_turns=4, out=str(tmp_path / "eval"))
    assert result.stats["answer_mode"] == "choice" and "mean_norm" in result.stats
    assert "answer=choice" in result.run_spec["run_id"]
    task = get_task("arc_c")
    questions = task.load("validation", limit=4)
    # the influence path's validation dialogues on the untrained adapter (LoRA's B starts at zero)
    q = questions[0]
    pair = {"prompt": start([q], task.setting)[0].messages(0), "chosen": f"Alice: <A>{q.golds[0]}</A>",
            "rejected": "Alice: no idea", "answer_mode": "choice"}
    cfg = SelectConfig(max_turns=4, max_new_tokens=16, lora=LoraConfig(r=4, alpha=4, dropout=0.0))
    path = ReferencePath([pair], cfg, task, "tiny-fitted", questions)
    f, answers, items = path.validate()
    predictions = [r["prediction"] for r in result.per_instance]
    assert answers == predictions
    assert f == pytest.approx(result.stats["mean"])
    assert items == pytest.approx([r["score"] for r in result.per_instance])
    weights = RewardConfig(lambda1=task.recipe.lambda1, lambda2=task.recipe.lambda2, t_norm=100)
    for r, q in zip(result.per_instance, questions):
        said = [t["answer"] for t in r["transcript"]]
        assert r["prediction"] == said[-1]  # every utterance bears an answer; the last one given wins
        assert (r["stop"] == "agreement") == (len(said) >= 2 and said[-1] == said[-2])
        s_task = score("accuracy", r["prediction"], r["gold"], options=q.options)
        assert r["score"] == s_task
        utterances = [Utterance(t["speaker"], t["text"], t["answer"], t["tokens"], 0, 0, t["truncated"])
                      for t in r["transcript"]]
        got = reward(r["score"], utterances, [1.0] * len(utterances), weights)
        assert got.task == (0.0 if got.impersonation else s_task)
    assert json.loads((tmp_path / "eval" / "stats.json").read_text())["answer_mode"] == "choice"


@pytest.mark.parametrize("contexts, options, gold, expected", [
    ((("The cat sat .", "A cat ran ."), ("The dog barked .",)), ("dog", "cat"), "cat", 1.0),
    ((("The dog sat .",), ("A dog ran . The cat hid .",)), ("dog", "cat"), "cat", 0.0),
    ((("A cat and a dog .",), ()), ("dog", "cat"), "dog", 1.0),  # a tie goes to the first listed
])
def test_most_frequent_option_counts_the_whole_story(contexts, options, gold, expected):
    from harness.references import REFERENCES

    q = Question("q", "XXXXX", (gold,), contexts, options)
    assert REFERENCES.get("most_frequent_option")([q], None) == [expected]
    assert REFERENCES.get("chance")([q], None) == [0.5]


def test_cbt_evaluation_records_the_reference_rows(tiny_fitted, tmp_path):
    from harness.references import solo

    result = evaluate(task="cbt", model="tiny-fitted", limit=3, max_new_tokens=8, max_turns=2,
                      out=str(tmp_path / "eval"))
    refs = json.loads((tmp_path / "eval" / "references.json").read_text())
    assert list(refs) == ["chance", "most_frequent_option", "one_agent", "whole_story"]
    assert refs["chance"]["mean"] == pytest.approx(0.1) and result.stats["references"]["chance"] == pytest.approx(0.1)
    for q in get_task("cbt").load("test", limit=3):  # the ceiling row is the independent best option
        memory = [{"role": "system", "content": solo(q.question, q.contexts[0] + q.contexts[1])}]
        lps = [independent_logprob(tiny_fitted, memory, "", c) for c in q.continuations]
        assert refs["whole_story"]["items"][q.id] == float(q.options[lps.index(max(lps))] in q.golds)
    assert evaluate(task="hotpotqa", model="tiny-fitted", limit=1, max_new_tokens=4, max_turns=2,
                    out=str(tmp_path / "qa")).stats.get("references") is None
