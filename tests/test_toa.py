"""TOA's search (several models act in one tree): its actions on hand-built trees, refine nodes in the
dialogue and in pairs, and `harness synth --method toa` end to end on the tiny models."""

import json
import random

import pytest

from harness.cli import main
from harness.mas.dialogue import Utterance
from harness.mas.roster import INFORMATION_EXCHANGE
from harness.synth.actions import Action, ToaRule, actions_at, choose
from harness.synth.mcts import Tree
from harness.synth.pairs import PairRule, alternatives, extract_pairs
from harness.tasks.base import Question

QUESTION = Question(id="q1", question="Who?", golds=("Y",), contexts=(("a",), ("b",)))
SYSTEMS = ("You are Alice.", "You are Bob.")
RULE = ToaRule(("pol", "other"), width=2)


def utt(speaker, text):
    return Utterance(speaker, text, "", len(text.split()), 0, 0, False)


def tree(roster=INFORMATION_EXCHANGE):
    return Tree("t:q1", QUESTION, roster, SYSTEMS, random.Random(0))


def grow(t, parent, speaker, text, model="pol", action="generate"):
    return t.add(parent, utt(speaker, text), 0.1, model, action).id


def never_done(_node):
    return False


def test_a_refine_node_says_its_drafts_turn_in_the_dialogue():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: a first draft of the opening")
    b = grow(t, a, "Bob", "Bob: a reply to the draft")
    r = grow(t, a, "Alice", "Alice: the opening rewritten by the other model", "other", "refine")
    rr = grow(t, r, "Alice", "Alice: and rewritten once more, by the policy", "pol", "refine")
    c = grow(t, rr, "Bob", "Bob: a reply to the second rewrite")
    assert t.nodes[r].depth == t.nodes[a].depth == 1 and t.nodes[c].depth == 2
    assert [n.id for n in t.path(c)] == [rr, c]  # the drafts a and r are not in this dialogue
    assert [n.id for n in t.path(b)] == [a, b]
    assert t.turn_parent(rr) == t.turn_parent(r) == t.turn_parent(a) == 0 and t.turn_parent(c) == rr
    assert t.next_agent(t.nodes[rr]) == 1  # Bob speaks after the rewritten opening
    d = t.dialogue(c, "k", max_turns=10)
    assert [u.text for u in d.utterances] == [t.nodes[rr].text, t.nodes[c].text]
    # the root's alternatives for the first turn: the draft and both rewrites; Bob's after the draft: b
    assert [n.id for n in alternatives(t, t.nodes[0])] == [a, r, rr]
    assert [n.id for n in alternatives(t, t.nodes[a])] == [b]


def test_a_refine_merges_only_with_rewrites():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: hello there friend")
    b = grow(t, a, "Bob", "Bob: the same words said twice")
    r = grow(t, a, "Alice", "Bob: the same words said twice", "other", "refine")  # as b's text: not merged into b
    assert r != b and t.nodes[r].action == "refine"
    assert grow(t, a, "Alice", "Bob: the same words said twice!", "pol", "refine") == r


def test_pairs_compare_drafts_with_rewrites_and_name_who_wrote_each_side():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: a draft by the policy")
    x = grow(t, 0, "Alice", "Alice: another opening entirely", "other")
    r = grow(t, a, "Alice", "Alice: the draft rewritten by the other model", "other", "refine")
    for node, q in ((a, 0.1), (x, 0.5), (r, 0.9)):
        t.nodes[node].q, t.nodes[node].visits = q, 1
    [p] = extract_pairs(t, PairRule(0.0, 0.2))
    assert (p["chosen_node"], p["rejected_node"], p["node_id"]) == (r, a, 0)
    assert (p["chosen_model"], p["chosen_action"], p["rejected_model"], p["rejected_action"]) == (
        "other", "refine", "pol", "generate")
    assert p["prompt"] == [{"role": "system", "content": "You are Alice."}, {"role": "user", "content": p["prompt"][1]["content"]}]
    assert "Draft" not in json.dumps(p["prompt"])  # the pair's prompt is the memory, not the rewrite request


def test_records_keep_models_actions_and_edges_and_optimas_have_none():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: one")
    grow(t, a, "Alice", "Alice: one, better", "other", "refine")
    t.record_edge(0, "pol", "generate", 0.5)
    t.record_edge(0, "pol", "generate", 1.0)
    again = Tree.from_record(t.to_record(), QUESTION, INFORMATION_EXCHANGE, SYSTEMS)
    assert again.to_record() == t.to_record()
    assert again.edges[(0, "pol", "generate")] == [2, 0.75]
    assert [(n.model, n.action) for n in again.nodes] == [(None, "generate"), ("pol", "generate"), ("other", "refine")]
    optima = tree()
    optima.add(0, utt("Alice", "Alice: one"), 0.1)
    record = optima.to_record()
    assert "edges" not in record and all("model" not in n and "action" not in n for n in record["nodes"])


def test_actions_each_model_generates_and_only_another_model_refines():
    t = tree()
    a = grow(t, 0, "Alice", "Alice: one")
    assert actions_at(t, t.nodes[0], RULE, done=False) == [Action(0, "pol", "generate"), Action(0, "other", "generate")]
    assert actions_at(t, t.nodes[a], RULE, done=False) == [
        Action(a, "pol", "generate"), Action(a, "other", "generate"), Action(a, "other", "refine")]
    assert actions_at(t, t.nodes[a], RULE, done=True) == [Action(a, "other", "refine")]  # the dialogue ended there


def test_a_frozen_speakers_turn_is_its_own_models_and_never_rewritten():
    roster = INFORMATION_EXCHANGE.with_speakers("Bob=frozen-model")
    t = tree(roster)
    a = grow(t, 0, "Alice", "Alice: one")
    b = grow(t, a, "Bob", "Bob: two", "frozen-model")
    assert actions_at(t, t.nodes[a], RULE, done=False) == [Action(a, "frozen-model", "generate"),
                                                           Action(a, "other", "refine")]
    assert actions_at(t, t.nodes[b], RULE, done=False) == [Action(b, "pol", "generate"), Action(b, "other", "generate")]


def test_selection_tries_each_model_first_then_fills_the_width_then_descends():
    t = tree()
    pending = {}
    first = [choose(t, RULE, pending, never_done) for _ in range(2)]
    assert first == [Action(0, "pol", "generate"), Action(0, "other", "generate")]  # untried: infinite UCB
    # both results known: the root's two children fill its width (2), so the descent goes to the best child
    a = grow(t, 0, "Alice", "Alice: by the policy")
    x = grow(t, 0, "Alice", "Alice: by the other model entirely", "other")
    for node, model, value in ((a, "pol", 1.0), (x, "other", -1.0)):
        t.backup_values({0: value, node: value})
        t.record_edge(0, model, "generate", value)
    action = choose(t, RULE, {}, never_done)
    assert action.node == a
    # At a, nobody has refined yet anywhere (infinite); generating takes the models' records as priors.
    assert action == Action(a, "other", "refine")


def test_actions_chosen_in_one_iteration_count_towards_the_width_and_the_visits():
    t = tree()
    rule = ToaRule(("pol", "other"), width=3, alpha=10.0)
    a = grow(t, 0, "Alice", "Alice: by the policy")
    t.backup_values({0: 0.0, a: 0.0})
    t.record_edge(0, "pol", "generate", 0.0)
    t.record_edge(0, "other", "generate", 0.0)
    pending = {}
    picks = [choose(t, rule, pending, never_done) for _ in range(2)]
    # equal values: the policy's action first; once it is pending, the other model's explores more
    assert picks == [Action(0, "pol", "generate"), Action(0, "other", "generate")]
    assert pending == {(0, "pol", "generate"): 1, (0, "other", "generate"): 1}
    # the root now has one child and two pending: its width (3) is full, so the descent goes to a
    assert choose(t, rule, pending, never_done).node == a


def test_a_finished_unrefinable_child_is_not_descended_into():
    roster = INFORMATION_EXCHANGE.with_speakers("Bob=frozen-model")
    t = tree(roster)
    rule = ToaRule(("pol", "other"), width=1)
    a = grow(t, 0, "Alice", "Alice: one")
    b = grow(t, a, "Bob", "Bob: the end", "frozen-model")
    t.backup_values({0: 0.5, a: 0.5, b: 0.5})
    t.record_edge(0, "pol", "generate", 0.5)
    t.record_edge(0, "other", "refine", 0.5)
    t.record_edge(a, "frozen-model", "generate", 0.5)
    # b's dialogue ended and Bob's turns are never rewritten: a takes the action though its width is full
    action = choose(t, rule, {}, lambda n: n.id == b)
    assert action.node == a


# -- end to end ---------------------------------------------------------------------------------

ARGS = ["synth", "--config", "smoke", "--task", "hotpotqa", "--questions", "2"]
OVERRIDES = ["trees_per_batch=2", "probe_size=4", "dpo_epsilon=-1.0", "explore_time=2", "max_turns=6"]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def toa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toa") / "run"
    assert main([*ARGS, "--out", str(out), "--method", "toa", "--models", "tiny-fitted,tiny-random", *OVERRIDES]) == 0
    return out


def test_toa_trees_mix_both_models_and_record_each_utterances_model(toa_run):
    trees = read_jsonl(toa_run / "trees.jsonl")
    spec = json.loads((toa_run / "run_spec.json").read_text())
    cfg = spec["config"]
    assert cfg["method"] == "toa" and set(spec["acting_models"]) == {"tiny-fitted", "tiny-random"}
    both_at_one_node = refine_of_other = False
    for t in trees:
        nodes = t["nodes"]
        assert len(t["rollouts"]) == cfg["explore_time"] * cfg["expand_time"]  # Optima's budget per tree
        assert all(n["model"] in ("tiny-fitted", "tiny-random") for n in nodes[1:])
        for n in nodes:
            kids = [nodes[c] for c in n["children"] if nodes[c]["action"] == "generate"]
            both_at_one_node |= {k["model"] for k in kids} == {"tiny-fitted", "tiny-random"}
            if n["parent"] is not None and n["action"] == "refine":
                assert n["depth"] == nodes[n["parent"]]["depth"]
                refine_of_other |= n["model"] != nodes[n["parent"]]["model"]
        root = nodes[0]
        assert root["visits"] == len(t["rollouts"])
        for r in t["rollouts"]:  # each rollout's first utterance is its action's
            assert nodes[r["leaf"]]["model"] == r["models"][-1]
        assert {e["model"] for e in t["edges"]} == {"tiny-fitted", "tiny-random"}
    assert both_at_one_node and refine_of_other


def test_toa_pairs_keep_todays_format_and_name_their_writers(toa_run):
    pairs = read_jsonl(toa_run / "pairs.jsonl")
    summary = json.loads((toa_run / "summary.json").read_text())
    cost = json.loads((toa_run / "cost.json").read_text())
    assert pairs
    for p in pairs:
        for key in ("pair_id", "question_id", "task", "policy", "prompt", "chosen", "rejected", "q_chosen",
                    "q_rejected", "speaker"):
            assert key in p
        assert p["policy"]["name"] == "tiny-fitted"
        assert {p["chosen_model"], p["rejected_model"]} <= {"tiny-fitted", "tiny-random"}
        assert {p["chosen_action"], p["rejected_action"]} <= {"generate", "refine"}
    models = summary["models"]
    assert sum(m["generate"] + m["refine"] for m in models.values()) == cost["rollouts"]
    by_model = cost["search"]["by_model"]
    assert by_model["tiny-random"]["actions"] == models["tiny-random"]["generate"] + models["tiny-random"]["refine"]
    assert by_model["tiny-random"]["completion_tokens"] > 0


@pytest.mark.parametrize("args, message", [
    (["--method", "toa"], "method=toa needs two or more models"),
    (["--models", "tiny-random"], "set method=toa"),
    (["--method", "toa", "--models", "tiny-random", "influence_weight=1"], "influence_weight applies to Optima"),
    (["--method", "toa", "--models", "tiny-random", "toa_width=0"], "toa_width must be at least 1"),
    (["--method", "tao", "--models", "tiny-random"], "unknown search method 'tao'"),
])
def test_toa_bad_settings_exit_2_with_one_line(args, message, tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path / "r"), *args, *OVERRIDES]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "r").exists()


def test_gemmas_turn_template_opens_with_bos_and_folds_the_system_prompt_into_the_first_user_turn():
    # gemma3-270m (a base model) gets Gemma's turn format as its chat template; rendered as transformers
    # renders chat templates (a sandboxed jinja environment trimming block lines).
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from harness.models import GEMMA_TURNS

    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(GEMMA_TURNS)
    memory = [{"role": "system", "content": "You are Bob."}, {"role": "user", "content": "Alice: hi"},
              {"role": "assistant", "content": "Bob: hello"}, {"role": "user", "content": "Alice: <A>x</A>"}]
    assert template.render(messages=memory, bos_token="<bos>", add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nYou are Bob.\n\nAlice: hi<end_of_turn>\n"
        "<start_of_turn>model\nBob: hello<end_of_turn>\n"
        "<start_of_turn>user\nAlice: <A>x</A><end_of_turn>\n<start_of_turn>model\n")
    # one assistant turn alone (the reward's language term scores utterances so)
    assert template.render(messages=[{"role": "assistant", "content": "T"}], bos_token="<bos>") == (
        "<bos><start_of_turn>model\nT<end_of_turn>\n")
