"""The tree search's pure parts on hand-built trees: distances, merge, backup, selection, pairs."""

import random

import pytest

from harness.mas.dialogue import Utterance
from harness.mas.roster import INFORMATION_EXCHANGE
from harness.synth.mcts import Tree, merge_distance, select_distance
from harness.synth.pairs import PairRule, extract_pairs
from harness.tasks.base import Question

QUESTION = Question(id="q1", question="Who?", golds=("Y",), contexts=(("a",), ("b",)))
SYSTEMS = ("You are Alice.", "You are Bob.")


def utt(speaker, text):
    return Utterance(speaker, text, "", len(text.split()), 0, 0, False)


def tree(seed=0):
    return Tree("t:q1", QUESTION, INFORMATION_EXCHANGE, SYSTEMS, random.Random(seed))


def grow(t, parent, speaker, text):
    return t.add(parent, utt(speaker, text), distance=0.1).id


def test_distances_are_normalised_character_edit_distances():
    assert select_distance("abcd", "abcd") == 0
    assert select_distance("abcd", "abce") == pytest.approx(1 / 5)
    assert select_distance("", "abcd") == pytest.approx(4 / 5)
    # The merge normalises by the new utterance only, as the reference does.
    assert merge_distance("ab", "abcdef") == pytest.approx(4 / 3)


def test_a_near_duplicate_merges_into_its_sibling_and_a_new_one_does_not():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: the city is Paris <A>Paris</A>")
    assert grow(t, 0, "Alice", "Alice: the city is Paris <A>Paris</A>.") == a  # 1 edit in 38 characters
    b = grow(t, 0, "Alice", "Alice: I do not know yet")
    assert b != a and t.nodes[0].children == [a, b]
    assert (t.nodes[b].depth, t.nodes[b].parent, t.next_agent(t.nodes[b])) == (1, 0, 1)


def test_backup_keeps_running_means_up_to_the_root():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: one")
    b = grow(t, a, "Bob", "Bob: two")
    c = grow(t, a, "Bob", "Bob: something else")
    t.backup(b, 1.0)
    t.backup(c, 0.0)
    t.backup(b, 0.5)
    assert (t.nodes[b].q, t.nodes[b].visits) == (pytest.approx(0.75), 2)
    assert (t.nodes[c].q, t.nodes[c].visits) == (0.0, 1)
    assert (t.nodes[a].q, t.nodes[a].visits) == (pytest.approx(0.5), 3)
    assert (t.nodes[0].q, t.nodes[0].visits) == (pytest.approx(0.5), 3)
    assert [n.id for n in t.path(b)] == [a, b]


def chain_tree():
    """root - a - b - c, and a second branch root - x - y (x expandable, y not)."""
    t = tree()
    a = grow(t, 0, "Alice", "Alice: first branch opening")
    b = grow(t, a, "Bob", "Bob: reply on the first branch")
    grow(t, b, "Alice", "Alice: the end")
    x = grow(t, 0, "Alice", "Alice: zzzz qqqq wwww")
    grow(t, x, "Bob", "Bob: only child")
    return t, a, b, x


def test_expandable_nodes_are_the_root_and_nodes_whose_first_child_has_children():
    t, a, b, x = chain_tree()
    assert [n.id for n in t.expandable()] == [0, a]  # b's child is a leaf; x's child is a leaf


def test_selection_drops_nodes_near_a_selected_one_and_falls_back_to_the_root():
    t, a, b, x = chain_tree()
    t.selected = [0]  # the root was expanded first; it is now excluded (distance 0 to itself)
    assert t.select(distance=0.25, top_k=10).id == a
    assert t.select(distance=0.25, top_k=10).id == 0  # a is excluded now too: nothing left
    assert t.selected == [0, a, 0]


def test_selection_samples_the_top_k_by_softmax_over_q_and_is_seeded():
    def pick(seed, top_k):
        t = tree(seed)
        ids = []
        for i, q in enumerate([0.9, 0.1, -0.5]):
            n = grow(t, 0, "Alice", f"Alice: branch {'xyz'[i] * 20}")
            child = grow(t, n, "Bob", f"Bob: reply {'uvw'[i] * 20}")
            grow(t, child, "Alice", "Alice: leaf")
            t.nodes[n].q = q
            ids.append(n)
        t.selected = [0]
        return t.select(0.25, top_k), ids

    choices = [pick(seed, 10)[0].id for seed in range(400)]
    _, ids = pick(0, 10)
    counts = [choices.count(i) for i in ids]
    assert counts[0] > counts[1] > counts[2] > 0  # softmax(0.9, 0.1, -0.5): 0.59, 0.27, 0.14
    assert abs(counts[0] / 400 - 0.59) < 0.08
    assert {pick(seed, 1)[0].id for seed in range(50)} == {ids[0]}  # top 1: always the best
    assert [pick(7, 10)[0].id for _ in range(3)] == [pick(7, 10)[0].id] * 3


def pair_tree(q_children, q_grandchildren=None):
    t = tree()
    kids = [grow(t, 0, "Alice", f"Alice: option {i} {'abcdefgh'[i] * 10}") for i in range(len(q_children))]
    for k, q in zip(kids, q_children):
        t.nodes[k].q, t.nodes[k].visits = q, 2
    deeper = []
    for i, q in enumerate(q_grandchildren or []):
        n = grow(t, kids[0], "Bob", f"Bob: reply {i} {'mnopqrst'[i] * 10}")
        t.nodes[n].q = q
        deeper.append(n)
    return t, kids, deeper


@pytest.mark.parametrize("q_children, expected", [
    ([0.9, 0.3], ("1", 0.9, 0.3)),  # best > 0.4 and gap 0.6 > 0.2
    ([0.9, 0.3, 0.5], ("1", 0.9, 0.3)),  # best and worst of three, order independent
    ([0.3, 0.9, 0.2], ("1", 0.9, 0.2)),
    ([0.4, 0.1], None),  # best must exceed epsilon strictly
    ([0.9, 0.75], None),  # gap 0.15 does not exceed 0.2
    ([0.9], None),  # one child: no pair
])
def test_pair_thresholds(q_children, expected):
    t, kids, _ = pair_tree(q_children)
    pairs = extract_pairs(t, PairRule(dpo_epsilon=0.4, dpo_min_gap=0.2))
    if expected is None:
        assert pairs == []
        return
    [p] = pairs
    assert (p["q_chosen"], p["q_rejected"]) == expected[1:]
    assert p["chosen"] == t.nodes[kids[q_children.index(expected[1])]].text
    assert p["rejected"] == t.nodes[kids[q_children.index(expected[2])]].text
    assert p["speaker"] == "Alice" and p["depth"] == 0


def test_pairs_use_final_q_values_and_keep_the_top_half_per_tree():
    # Two valuable nodes: the root (children 0.9 / 0.3) and its first child (grandchildren 0.8 / 0.1, 0.7).
    t, kids, deeper = pair_tree([0.9, 0.3], [0.8, 0.1, 0.7])
    pairs = extract_pairs(t, PairRule(0.4, 0.2, keep_fraction=1.0))
    assert [(p["depth"], p["q_chosen"], p["q_rejected"]) for p in pairs] == [(0, 0.9, 0.3), (1, 0.8, 0.1)]
    # A child whose Q dropped since it was best is no longer chosen (no stale max pointer).
    t.nodes[deeper[0]].q = 0.05
    pairs = extract_pairs(t, PairRule(0.4, 0.2, keep_fraction=1.0))
    assert [(p["q_chosen"], p["q_rejected"]) for p in pairs] == [(0.9, 0.3), (0.7, 0.05)]
    # keep_fraction 0.5 of two pairs keeps the one with the best chosen Q.
    assert [p["q_chosen"] for p in extract_pairs(t, PairRule(0.4, 0.2))] == [0.9]


def test_pair_prompt_is_the_next_speakers_memory_at_the_node():
    t, kids, deeper = pair_tree([0.9, 0.3], [0.8, 0.1])
    [_, bob_pair] = extract_pairs(t, PairRule(0.4, 0.2, keep_fraction=1.0))
    assert bob_pair["speaker"] == "Bob"
    assert bob_pair["prompt"] == [
        {"role": "system", "content": "You are Bob."},
        {"role": "user", "content": t.nodes[kids[0]].text},  # Alice's utterance, from Bob's side
    ]


def test_tree_records_round_trip():
    t, kids, deeper = pair_tree([0.9, 0.3], [0.8, 0.1])
    t.selected = [0, kids[0]]
    again = Tree.from_record(t.to_record(), QUESTION, INFORMATION_EXCHANGE, SYSTEMS)
    assert again.to_record() == t.to_record()
    assert extract_pairs(again, PairRule(0.4, 0.2)) == extract_pairs(t, PairRule(0.4, 0.2))
