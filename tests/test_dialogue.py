import io

import pytest

from harness.mas.dialogue import CLOSING, Dialogue, Utterance, parse_answer, start
from harness.mas.progress import UtteranceBar
from harness.mas.roster import DEBATE, INFORMATION_EXCHANGE
from harness.tasks.base import Question


@pytest.mark.parametrize("text, answer", [
    ("Alice: it is <A>Paris</A>", "Paris"),
    ("<A>one</A> then <A>two</A>", "two"),  # the last answer wins
    ("<A> spaced </A>", "spaced"),
    ("<A>no close", ""),
    ("<A>open close</A", "open close"),  # the reference tolerates a missing '>'
    ("<A>two\nlines</A>", ""),  # an answer sits on one line
    ("no answer at all", ""),
    ("<A></A>", ""),
])
def test_parse_answer(text, answer):
    assert parse_answer(text) == answer


def _dialogue(setting="information_exchange"):
    q = Question("q1", "Who?", ("x",), (("a1", "a2"), ("b1",)))
    return start([q], setting)[0]


def _say(d: Dialogue, speaker: str, text: str, max_turns=10, closing_turn=False):
    d.add(Utterance(speaker, text, parse_answer(text), 3, 10, 0, False, closing=d.closing), max_turns, closing_turn)


def test_two_consecutive_agreeing_answers_end_the_dialogue():
    d = _dialogue()
    _say(d, "Alice", "<A>Paris</A>")
    assert not d.done
    _say(d, "Bob", "<A>paris </A>")  # case and outer spaces do not matter
    assert d.stop == "agreement" and d.final_answer == "paris"


def test_answerless_turns_do_not_break_the_chain_but_a_new_answer_does():
    d = _dialogue("debate")
    _say(d, "Alice", "<A>4</A>")
    _say(d, "Bob", "Check step 2.")
    assert not d.done and d.final_answer == "4"
    _say(d, "Alice", "<A>5</A>")
    assert not d.done and d.final_answer == "5"
    _say(d, "Bob", "Fine.")
    _say(d, "Alice", "<A>5</A>")
    assert d.stop == "agreement" and len(d.utterances) == 5


def test_turn_cap_and_no_answer():
    d = _dialogue()
    for i in range(4):
        _say(d, ("Alice", "Bob")[i % 2], "thinking", max_turns=4)
    assert d.stop == "turn_cap" and d.final_answer == ""


def test_closing_turn_asks_the_next_speaker_once_and_its_answer_is_the_prediction():
    d = _dialogue()
    for i in range(4):
        _say(d, ("Alice", "Bob")[i % 2], "thinking", max_turns=4, closing_turn=True)
    assert not d.done and d.closing and d.next_agent == 0
    alice, bob = d.messages(0), d.messages(1)
    assert alice[-1]["role"] == "user" and alice[-1]["content"] == f"thinking\n\n{CLOSING}"
    assert CLOSING not in str(bob)
    _say(d, "Alice", "So <A>Paris</A>", max_turns=4, closing_turn=True)
    assert d.stop == "turn_cap" and d.final_answer == "Paris" and d.utterances[-1].closing
    # the memory keeps the instruction before the closing answer, roles still alternating
    alice = d.messages(0)
    assert [m["role"] for m in alice[-3:]] == ["assistant", "user", "assistant"]
    assert alice[-2]["content"].endswith(CLOSING) and CLOSING not in str(d.messages(1))


@pytest.mark.parametrize("answers, closing_turn", [(("<A>x</A>", "", "", ""), True), (("",) * 4, False)])
def test_no_closing_turn_after_an_answer_or_when_off(answers, closing_turn):
    d = _dialogue()
    for i, text in enumerate(answers):
        _say(d, ("Alice", "Bob")[i % 2], text or "thinking", max_turns=4, closing_turn=closing_turn)
    assert d.stop == "turn_cap" and not d.closing and len(d.utterances) == 4


def test_utterance_bar_moves_every_turn_and_its_total_tightens():
    bar = UtteranceBar(3, cap=4, desc="t", file=io.StringIO())
    assert bar.total == 12
    bar.begin([0, 2, 4], [False, False, True])  # one starts part-way, one is over
    assert bar.total == 12 - 2 - 4 and bar.ended == 1
    bar.spoke(2)
    bar.end(spoken=1)  # the first ends after one utterance: 3 of its 4 are never said
    assert bar.n == 2 and bar.total == 3 and bar.ended == 2
    bar.spoke(1)
    bar.end(spoken=4)  # the part-way one spoke two (3rd, 4th): the bar is full
    assert bar.n == bar.total == 3 and bar.ended == 3


def test_memory_roles_own_turns_assistant_partner_user():
    d = _dialogue()
    _say(d, "Alice", "A1")
    _say(d, "Bob", "B1")
    alice, bob = d.messages(0), d.messages(1)
    assert [m["role"] for m in alice] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in bob] == ["system", "user", "assistant"]
    assert alice[2]["content"] == "A1" and bob[1]["content"] == "A1"
    assert "Who?" in alice[1]["content"]


def test_information_exchange_prompts_hold_only_own_context():
    alice, bob = INFORMATION_EXCHANGE.system_prompts(Question("q", "Q?", ("x",), (("fact A",), ("fact B",))))
    assert "fact A" in alice and "fact B" not in alice
    assert "fact B" in bob and "fact A" not in bob
    assert alice.count("Alice") >= 2 and "<A>" in alice


def test_debate_critic_is_told_not_to_answer():
    solver, critic = DEBATE.system_prompts(Question("q", "Q?", ("x",)))
    assert "<A>answer</A>" in solver and "<A>" not in critic and "Do not give the answer" in critic
