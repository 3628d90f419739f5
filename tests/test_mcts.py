"""The tree search's pure parts on hand-built trees: distances, merge, backup, selection (with and
without influence estimates), pairs, the estimates' refresh."""

import random

import pytest

from harness.mas.dialogue import Utterance
from harness.mas.roster import INFORMATION_EXCHANGE
from harness.synth.guidance import refresh_estimates
from harness.synth.mcts import Estimate, Tree, merge_distance, minmax, select_distance, softmax
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
        t, ids = branches([0.9, 0.1, -0.5], seed)
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


# -- influence-guided selection ---------------------------------------------------------------

def branches(qs, seed=0):
    """The root (already selected) with one expandable branch per Q; returns the tree and the branches' ids."""
    t = tree(seed)
    ids = []
    for i, q in enumerate(qs):
        n = grow(t, 0, "Alice", f"Alice: branch {'xyzk'[i] * 20}")
        child = grow(t, n, "Bob", f"Bob: reply {'uvwl'[i] * 20}")
        grow(t, child, "Alice", "Alice: leaf")
        t.nodes[n].q = q
        ids.append(n)
    t.selected = [0]
    return t, ids


def inject(t, ids, estimates):
    for n, value in zip(ids, estimates):
        if value is not None:
            t.estimates[n] = Estimate(0, 0, value)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("top_k", [1, 2, 10])
def test_weight_zero_is_optimas_ranking_and_draws(seed, top_k):
    # Estimates are present and would change the choice if they counted; weight 0 ignores them.
    qs = [0.2, 0.9, -0.1, 0.5]
    t, ids = branches(qs, seed)
    inject(t, ids, [5.0, -3.0, 9.0, 0.0])
    rng = random.Random(seed)
    top = sorted(ids, key=lambda i: -qs[ids.index(i)])[:top_k]  # Optima's rule, stated independently
    expected = rng.choices(top, weights=softmax([qs[ids.index(i)] for i in top]))[0]
    assert t.select(0.25, top_k, influence_weight=0.0).id == expected
    assert t.rng.getstate() == rng.getstate()  # the same draws, no extra one


@pytest.mark.parametrize("qs, estimates, weight, expected", [
    ([0.5, 0.4, 0.3], [0.0, 0.0, 1.0], 1.0, 2),  # values 0.5, 0.4, 1.3: the high-I node
    ([0.5, 0.4, 0.3], [0.0, 0.0, 1.0], 0.1, 0),  # values 0.5, 0.4, 0.4: Q still decides
    ([0.5, 0.4, 0.3], [-2.0, 8.0, 3.0], 1.0, 1),  # minmax: 0, 1, 0.5 -> 0.5, 1.4, 0.8
    ([0.5, 0.4, 0.3], [0.7, 0.7, 0.7], 5.0, 0),  # equal estimates normalise to 0: Q decides
    ([0.5, 0.4, 0.3], [None, None, None], 5.0, 0),  # no estimates: the root's 0 everywhere
])
def test_weighted_selection_adds_normalised_influence_to_q(qs, estimates, weight, expected):
    t, ids = branches(qs)
    inject(t, ids, estimates)
    assert t.select(0.25, 1, influence_weight=weight).id == ids[expected]


def test_weighted_selection_samples_by_softmax_over_the_combined_value():
    t, ids = branches([0.5, 0.4, 0.3])
    inject(t, ids, [-2.0, 8.0, 3.0])
    assert t.values(t.expandable()[1:], 1.0) == pytest.approx([0.5, 1.4, 0.8])
    counts = [0, 0, 0]
    for seed in range(400):
        t.rng, t.selected = random.Random(seed), [0]
        counts[ids.index(t.select(0.25, 10, influence_weight=1.0).id)] += 1
    assert abs(counts[1] / 400 - softmax([0.5, 1.4, 0.8])[1]) < 0.08  # 0.51


@pytest.mark.parametrize("values, expected", [
    ([1.0, 3.0, 2.0], [0.0, 1.0, 0.5]),
    ([2.0, 2.0, 2.0], [0.0, 0.0, 0.0]),
    ([-1.0], [0.0]),
])
def test_minmax(values, expected):
    assert minmax(values) == pytest.approx(expected)


def test_a_node_without_an_estimate_takes_its_nearest_ancestors():
    t, a, b, x = chain_tree()
    assert t.influence(t.nodes[b]) == 0.0  # no estimate anywhere: neutral
    t.estimates[0] = Estimate(a, x, 0.3)
    assert [t.influence(t.nodes[i]) for i in (0, a, b, x)] == [0.3] * 4
    t.estimates[a] = Estimate(b, b, -0.2)
    assert [t.influence(t.nodes[i]) for i in (0, a, b, x)] == [0.3, -0.2, -0.2, 0.3]


class LengthGap:
    """A deterministic `node_influence` for testing the refresh's bookkeeping: a test input, not a stand-in
    for the influence screen. A pair's value is its chosen utterance's length minus its rejected's; every
    call's pairs are kept."""

    def __init__(self):
        self.calls = []

    def __call__(self, pairs):
        self.calls.append(pairs)
        return [len(p["chosen"]) - len(p["rejected"]) for p in pairs]


def test_estimates_are_requested_in_one_call_for_all_trees_and_only_when_a_pair_changes():
    t1, kids, deeper = pair_tree([0.9, 0.3], [0.8, 0.1])
    t2, kids2, _ = pair_tree([0.2, 0.6])
    screen = LengthGap()
    assert refresh_estimates([t1, t2], screen) == 3 and len(screen.calls) == 1
    # The pairs are the ones extract_pairs builds at those nodes (prompt, chosen, rejected).
    built = [p for t in (t1, t2) for p in extract_pairs(t, PairRule(-10.0, -10.0, keep_fraction=1.0))]
    assert sorted(screen.calls[0], key=str) == sorted(
        ({k: p[k] for k in ("prompt", "chosen", "rejected")} for p in built), key=str)
    assert t1.estimates[0] == Estimate(kids[0], kids[1], len(t1.nodes[kids[0]].text) - len(t1.nodes[kids[1]].text))
    assert t2.estimates[0].chosen == kids2[1]

    assert refresh_estimates([t1, t2], screen) == 0 and len(screen.calls) == 1  # nothing changed
    t1.nodes[deeper[1]].q = 0.95  # a backup made the worst grandchild the best
    assert refresh_estimates([t1, t2], screen) == 1
    assert (t1.estimates[kids[0]].chosen, t1.estimates[kids[0]].rejected) == (deeper[1], deeper[0])
    for d in deeper:  # tied children make no pair: the node falls back to its parent's estimate
        t1.nodes[d].q = 0.5
    assert refresh_estimates([t1, t2], screen) == 0
    assert kids[0] not in t1.estimates and t1.influence(t1.nodes[kids[0]]) == t1.estimates[0].value


def test_estimates_round_trip_and_optimas_records_have_none():
    t, kids, deeper = pair_tree([0.9, 0.3], [0.8, 0.1])
    assert "estimates" not in t.to_record()
    refresh_estimates([t], LengthGap())
    again = Tree.from_record(t.to_record(), QUESTION, INFORMATION_EXCHANGE, SYSTEMS)
    assert again.estimates == t.estimates and again.to_record() == t.to_record()
