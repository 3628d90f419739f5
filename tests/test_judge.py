"""The evaluation's judge (harness.judge): LangChain's cot_qa reading rule, its message, its column."""

import json

import pytest

from harness import judge
from harness.backends.response_cache import ResponseCache
from harness.cli import main
from harness.judge import Judge


@pytest.mark.parametrize("reply, verdict", [
    ("The student says Paris, as the context does.\nGRADE: CORRECT", True),
    ("The answer conflicts with the context.\nGRADE: INCORRECT", False),
    ("reasoning...\ngrade:   correct.", True),
    ("GRADE: INCORRECT, not CORRECT", False),  # the first GRADE: decides
    ("Correct. The student matches.", True),  # first word
    ("The student names another city, so: INCORRECT", False),  # last word
    ("The student answer is incorrect because it names London", None),  # neither first nor last
    ("", None),
])
def test_reply_is_read_by_langchains_rule(reply, verdict):
    assert judge.parse(reply) is verdict


def test_the_message_puts_the_gold_in_context_and_the_answer_in_student_answer():
    text = judge.message("Where is the lab?", ["Rome", "Roma"], "in Rome")[0]["content"]
    assert "QUESTION: Where is the lab?\nCONTEXT: Rome OR Roma\nSTUDENT ANSWER: in Rome\nEXPLANATION:" in text
    assert text.startswith("You are a teacher grading a quiz.")


def test_prompt_hash_moves_with_the_template(monkeypatch):
    before = judge.prompt_hash()
    monkeypatch.setattr(judge, "TEMPLATE", judge.TEMPLATE.replace("teacher", "professor"))
    assert judge.prompt_hash() != before


def test_eval_with_a_judge_grades_every_answer_in_its_own_column(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["eval", "--task", "arc_c", "--model", "tiny-fitted", "--split", "validation", "--limit", "4",
            "--out", str(out), "max_new_tokens=8", "max_turns=2", "judge=tiny-random", "judge_max_new_tokens=4",
            f"cache={tmp_path / 'cache'}"]
    assert main(args) == 0
    stats = json.loads((out / "stats.json").read_text())
    rows = [json.loads(line) for line in (out / "per_instance.jsonl").read_text().splitlines()]
    assert stats["judge"]["name"] == "tiny-random" and stats["judge"]["prompt_version"] == judge.VERSION
    assert stats["judge"]["accuracy"] == sum(r["judge"]["correct"] for r in rows) / len(rows)
    assert "judge acc (tiny-random)" in capsys.readouterr().out
    cost = json.loads((out / "cost.json").read_text())["judge"]
    assert cost["calls"] == sum(bool(r["prediction"]) for r in rows) and cost["cache_hits"] == 0



def test_cached_verdicts_are_read_without_a_call(tiny_random, tmp_path):
    from harness.backends.grader import Grader

    items = [("q1", ["a"], "a"), ("q2", ["b"], "c"), ("q3", ["d"], "d"), ("q4", ["e"], "")]
    grader = Grader("judge", tiny_random, ResponseCache(tmp_path / "judge"), "hf", judge.prompt_hash(), 8)
    grader.cache.put({grader.key(judge.message(*items[0])): {"reply": "Same city.\nGRADE: CORRECT"},
                      grader.key(judge.message(*items[1])): {"reply": "Another city.\nGRADE: INCORRECT"},
                      grader.key(judge.message(*items[2])): {"reply": "I cannot tell."}})
    verdicts = Judge(grader).grade(items)
    assert [v.correct for v in verdicts] == [True, False, False, False]
    assert [v.parsed for v in verdicts] == [True, True, False, False]
    assert grader.spent["calls"] == 0 and grader.spent["cache_hits"] == 3  # the empty answer is never asked
