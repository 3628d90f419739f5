"""A differentiable, answer-aware surrogate S of the validation metric, read off theta*'s finished
validation dialogues.

Each dialogue's prediction is its answering turn's answer (the last utterance with one). Holding
theta*'s dialogue fixed up to that turn, S is the mean over the V dialogues of a log-probability
margin at that turn, a (context, better, worse) row whose margin is log p(better) - log p(worse):

- answer_mode=choice: the gold option's continuation over the best wrong option's (by theta*'s own
  option scores), scored after the turn exactly as `harness.mas.dialogue.choose` scores options. The
  margin's sign is whether the item is right, so S moves with the metric as directly as a smooth
  function can.
- generate: theta*'s answering turn with its answer replaced by the gold one, over the turn as said.
  The two share every token before the answer, so the margin is taken at the answer tokens (and the
  few after them). Chosen over the gold answer's bare log-likelihood because it asks whether the gold
  answer overtakes theta*'s own answer, which is what flips the item, and over a whole-turn margin
  because the turn's wording moves no score. An item theta* answers right has margin 0 (its two rows
  are the same text): to first order the screen reads only the items a step could win, not the ones
  it could lose.

Dialogues without an answer, and those whose answer a frozen speaker gave (no step of the policy
reaches it), add nothing; S still divides by V, so it is on the scale of the metric's mean.
"""

from __future__ import annotations

from harness.mas.dialogue import ANSWER, Dialogue, same_answer
from harness.screen.dpo import EncodedPair, encode_pair, response_logps


def answering_turn(d: Dialogue) -> int | None:
    """The index of the utterance whose answer is the dialogue's prediction, if the policy said it."""
    turn = next((i for i in reversed(range(len(d.utterances))) if d.utterances[i].answer), None)
    if turn is None or d.roster.agents[d.roster.speaker(turn)].frozen:
        return None
    return turn


def memory_before(d: Dialogue, turn: int) -> list[dict]:
    """The speaker's memory as it was when it said utterance `turn` (closing instruction included)."""
    agent = d.roster.speaker(turn)
    before = Dialogue(d.question, d.systems, d.utterances[:turn], roster=d.roster,
                      closing=d.utterances[turn].closing)
    return before.messages(agent)


def choice_row(d: Dialogue, turn: int, tokenizer) -> EncodedPair | None:
    """Gold option's continuation over theta*'s best-scored wrong one, after the turn as `choose` scores."""
    q, u = d.question, d.utterances[turn]
    gold = next((i for i, o in enumerate(q.options) if any(same_answer(o, g) for g in q.golds)), None)
    if gold is None or u.choice_logprobs is None:
        return None
    wrong = max((i for i in range(len(q.options)) if i != gold), key=u.choice_logprobs.__getitem__)
    messages = memory_before(d, turn) + [{"role": "assistant", "content": u.text}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def ids(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False).input_ids

    return EncodedPair(ids(text + f"{u.speaker}:"), ids(q.continuations[gold]), ids(q.continuations[wrong]))


def generate_row(d: Dialogue, turn: int, tokenizer) -> EncodedPair | None:
    """The turn with the gold answer in place of its own, over the turn as said (None where it is right)."""
    u = d.utterances[turn]
    if any(same_answer(u.answer, g) for g in d.question.golds):
        return None
    last = list(ANSWER.finditer(u.text))[-1]  # the answer `parse_answer` read
    gold_text = u.text[:last.start(1)] + d.question.golds[0] + u.text[last.end(1):]
    return encode_pair(tokenizer, {"prompt": memory_before(d, turn), "chosen": gold_text, "rejected": u.text})


def surrogate_rows(dialogues: list[Dialogue], tokenizer, answer_mode: str) -> list[EncodedPair]:
    """The margin rows S sums (see the module's docstring)."""
    rows = []
    for d in dialogues:
        turn = answering_turn(d)
        if turn is None:
            continue
        choice = answer_mode == "choice" and d.question.options
        row = (choice_row if choice else generate_row)(d, turn, tokenizer)
        if row is not None:
            rows.append(row)
    return rows


def surrogate_parts(model, rows: list[EncodedPair], size: int, pad_id: int, micro_batch: int):
    """S over `size` dialogues from `rows`, one micro-batch's share at a time (with its graph when
    gradients are on: a caller that backpropagates each part never holds two parts' activations)."""
    for lo in range(0, len(rows), micro_batch):
        logps = response_logps(model, rows[lo:lo + micro_batch], pad_id)
        yield (logps[:, 0] - logps[:, 1]).sum() / size
