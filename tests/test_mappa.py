"""MAPPA-style coach credit: the versioned coach prompt, its reply parser, the coach's score cache,
the summaries reports read, `--selector mappa` and `synth.credit=mappa` on the tiny models."""

import json

import pytest

from harness.backends.response_cache import ResponseCache
from harness.cli import main
from harness.credit import prompt
from harness.credit.coach import FALLBACK, Action, Coach, parse
from harness.correlation import ranks
from harness.credit.stats import NO_SIGNAL, mean_by, spearman, summary
from harness.selection import budget

MEMORY = [{"role": "system", "content": "You are Alice. Your information: the key is under the mat."},
          {"role": "user", "content": "Where is the key?"}]


def action(said, agent="Alice", gold="under the mat"):
    return Action(agent, "informant", MEMORY, said, gold)


def test_the_coach_never_sees_the_gold_unless_told_and_the_prompt_is_versioned(monkeypatch):
    hidden = prompt.coach_message("Alice", "informant", MEMORY, "It is under the mat.", None)
    shown = prompt.coach_message("Alice", "informant", MEMORY, "It is under the mat.", "under the mat")
    assert "correct answer" not in hidden and "correct answer, for you only" in shown
    assert "[instructions and information]\nYou are Alice." in hidden and "[heard]\nWhere is the key?" in hidden
    assert hidden.endswith("PROCESS_SCORE: <a number from 0 to 10>")
    before = prompt.prompt_hash()
    monkeypatch.setattr(prompt, "VERSION", "mappa-coach-v2")
    assert prompt.prompt_hash() != before


@pytest.mark.parametrize("reply, score", [
    ("PROCESS_SCORE: 7", 7.0),
    ("The action helps.\nprocess_score: 8.5 because", 8.5),
    ("PROCESS_SCORE: [12]", 10.0),  # clamped, as MAPPA's parser
    ("I would give it a seven.", None),
    ("", None),
])
def test_replies_are_read_as_mappas_process_score(reply, score):
    assert parse(reply) == score


def test_ranks_and_spearman():
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None and spearman([1, 2], [1, 2]) is None
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


def test_summary_credits_each_agent_and_flags_a_coach_without_signal():
    rows = [{"agent": a, "action": k, "score": s, "parsed": p, "reward": r, "correct": c}
            for a, k, s, p, r, c in [("Alice", "generate", 8, True, 1.0, 1.0), ("Bob", "generate", 2, True, -1.0, 0.0),
                                     ("Alice", "refine", 6, True, 0.5, 1.0), ("Bob", "closing", 5, False, 0.0, 0.0)]]
    s = summary(rows)
    assert s["parse_rate"] == 0.75 and s["mean_score"] == 5.25
    assert s["by_agent"]["Alice"] == {"actions": 2, "mean_score": 7.0, "bias": 1.75}
    assert s["by_action"]["closing"]["bias"] == pytest.approx(-0.25)
    assert s["spearman_reward"] == pytest.approx(1.0) and s["spearman_correct"] > NO_SIGNAL and not s["no_signal"]
    flat = summary([r | {"correct": 1.0} for r in rows])  # correctness constant: no signal to find
    assert flat["spearman_correct"] is None and flat["no_signal"]
    assert mean_by([], "agent") == {}


@pytest.fixture
def coach(tiny_random, tmp_path):
    return Coach(tiny_random, ResponseCache(tmp_path / "coach"), "hf", max_new_tokens=4)


def test_coach_scores_are_cached_and_reused_across_coaches(tiny_random, coach, tmp_path):
    actions = [action("It is under the mat."), action("I do not know."), action("Bob: it is in the car.", "Bob")]
    first = coach.score(actions)
    assert coach.spent["calls"] == 3 and coach.spent["cache_hits"] == 0 and coach.spent["completion_tokens"] > 0
    assert all(s.score == (parse(s.reply) if s.parsed else FALLBACK) for s in first)
    again = Coach(tiny_random, ResponseCache(tmp_path / "coach"), "hf", max_new_tokens=4)
    assert again.score(actions) == first
    assert again.spent["calls"] == 0 and again.spent["cache_hits"] == 3
    # showing the gold is another request, so another entry: no score made without it is reused
    seeing = Coach(tiny_random, ResponseCache(tmp_path / "coach"), "hf", sees_gold=True, max_new_tokens=4)
    seeing.score(actions[:1])
    assert seeing.spent["calls"] == 1 and "under the mat" in seeing.messages(actions[0])[0]["content"]


def test_a_new_prompt_version_never_reuses_old_scores(coach, tmp_path, monkeypatch):
    coach.score([action("It is under the mat.")])
    monkeypatch.setattr(prompt, "TEMPLATE", prompt.TEMPLATE + "\n")
    coach.score([action("It is under the mat.")])
    assert coach.spent["calls"] == 2


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def pairs_with_scores():
    """Six pairs and the coach's scores of their chosen and rejected sides."""
    scores = [(9, 1), (5, 5), (7, 2), (3, 8), (6, 4), (10, 0)]  # gaps 8, 0, 5, -5, 2, 10
    pairs = [{"pair_id": f"t/n{i}", "tree_id": "t", "question_id": "q1", "task": "hotpotqa", "roster": "information_exchange",
              "policy": {"name": "tiny-random", "sha256": "x"}, "speaker": "Alice", "prompt": MEMORY,
              "chosen": f"Alice: chosen {i}", "rejected": f"Alice: rejected {i}", "q_chosen": 0.5 + i / 10,
              "q_rejected": 0.0} for i in range(len(scores))]
    return pairs, scores


def test_selector_mappa_keeps_alpha_of_the_pool_by_the_coachs_gap(coach, tmp_path):
    pairs, scores = pairs_with_scores()
    # The coach's replies are put in its cache first, so the selection is exact and calls no model.
    coach.grader.cache.put({coach.grader.key(coach.messages(Action("Alice", "informant", MEMORY, p[side]))): {
        "reply": f"PROCESS_SCORE: {s[k]}"} for p, s in zip(pairs, scores) for k, side in enumerate(("chosen", "rejected"))})
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "select"
    assert main(["select", "--selector", "mappa", "--pairs", str(tmp_path / "pairs.jsonl"), "--alpha", "0.5",
                 "--coach", "tiny-random", "--out", str(out), "coach_max_new_tokens=4",
                 f"cache={tmp_path / 'coach'}"]) == 0
    selected = [json.loads(line)["pair_id"] for line in (out / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == budget(6, 0.5) == 3
    assert selected == ["t/n5", "t/n0", "t/n2"]  # gaps 10, 8, 5
    rows = {json.loads(line)["pair_id"]: json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()}
    assert [rows[p["pair_id"]]["H"] for p in pairs] == [8, 0, 5, -5, 2, 10]
    facts = json.loads((out / "run_spec.json").read_text())["selector_facts"]
    assert facts["coach_spent"]["calls"] == 0 and facts["coach_spent"]["cache_hits"] == 12
    assert facts["parse_rate"] == 1.0 and facts["agrees_with_q"] == pytest.approx(4 / 6)
    assert facts["spearman_q"] == pytest.approx(spearman([v for s in scores for v in s],
                                                         [q for p in pairs for q in (p["q_chosen"], 0.0)]))
    assert facts["coach"]["sees_gold"] is False and facts["coach"]["prompt_sha256"] == prompt.prompt_hash()


@pytest.mark.parametrize("selector, kept_gap", [("qvalue", (10 + 2 - 5) / 3), ("mappa", (10 + 8 + 5) / 3)])
def test_credit_beside_any_selector_records_the_coachs_gap_over_what_it_kept(selector, kept_gap, coach, tmp_path):
    pairs, scores = pairs_with_scores()
    coach.grader.cache.put({coach.grader.key(coach.messages(Action("Alice", "informant", MEMORY, p[side]))): {
        "reply": f"PROCESS_SCORE: {s[k]}"} for p, s in zip(pairs, scores) for k, side in enumerate(("chosen", "rejected"))})
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "select"
    assert main(["select", "--selector", selector, "--credit", "mappa", "--pairs", str(tmp_path / "pairs.jsonl"),
                 "--alpha", "0.5", "--coach", "tiny-random", "--out", str(out), "coach_max_new_tokens=4",
                 f"cache={tmp_path / 'coach'}"]) == 0
    facts = json.loads((out / "run_spec.json").read_text())["selector_facts"]
    assert facts["kept_gap"] == pytest.approx(kept_gap)
    assert facts["mean_gap"] == pytest.approx((8 + 0 + 5 - 5 + 2 + 10) / 6)
    assert facts["coach_spent"]["calls"] == 0 and facts["coach_spent"]["cache_hits"] == 12


def test_selector_mappa_without_a_coach_is_one_line(tmp_path, capsys):
    pairs, _ = pairs_with_scores()
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    assert main(["select", "--selector", "mappa", "--pairs", str(tmp_path / "pairs.jsonl"),
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need a coach model" in err[0]


# -- the coach's credit as node values in the tree search ------------------------------------------

SYNTH = ["synth", "--config", "smoke", "--task", "hotpotqa", "--questions", "1", "--credit", "mappa",
         "--coach", "tiny-random"]
SMALL = ["explore_time=2", "expand_time=2", "max_turns=4", "probe_size=2", "coach_max_new_tokens=4",
         "dpo_epsilon=-1.0"]


@pytest.fixture(scope="module")
def credit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("credit")
    assert main([*SYNTH, "--out", str(root / "run"), "--cache", str(root / "cache"), *SMALL]) == 0
    return root


def test_node_values_are_each_utterances_own_coach_credit(credit_run):
    run = credit_run / "run"
    [tree] = [json.loads(line) for line in (run / "trees.jsonl").read_text().splitlines()]
    credit = {c["node"]: c for c in tree["credit"]}
    assert set(credit) == {n["id"] for n in tree["nodes"][1:]}  # every utterance scored once
    for n in tree["nodes"][1:]:
        assert n["q"] == pytest.approx(credit[n["id"]]["score"] / 10)
    record = json.loads((run / "credit.json").read_text())
    spec = json.loads((run / "run_spec.json").read_text())
    cost = json.loads((run / "cost.json").read_text())
    assert spec["config"]["credit"] == "mappa" and spec["coach"]["sees_gold"] is False
    assert record["summary"]["actions"] == len(credit) == cost["search"]["coach_actions"]
    assert cost["search"]["coach_calls"] == len(credit) and cost["search"]["coach_prompt_tokens"] > 0
    assert set(record["summary"]["by_agent"]) <= {"Alice", "Bob"} and record["summary"]["parse_rate"] is not None
    assert all(row["reward"] is not None for row in record["actions"])  # every scored node was in a rollout


def test_a_rerun_reuses_the_coachs_cached_scores(credit_run):
    again = credit_run / "again"
    assert main([*SYNTH, "--out", str(again), "--cache", str(credit_run / "cache"), *SMALL]) == 0
    cost = json.loads((again / "cost.json").read_text())
    assert cost["search"]["coach_calls"] == 0 and cost["search"]["coach_cache_hits"] > 0
    def grown(run):
        return [(t["nodes"], t["credit"]) for t in map(json.loads, (run / "trees.jsonl").read_text().splitlines())]

    assert grown(again) == grown(credit_run / "run")


def test_credit_without_a_coach_is_one_line(tmp_path, capsys):
    assert main([*SYNTH[:-2], "--out", str(tmp_path / "r"), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "credit=mappa needs a coach model" in err[0]
    assert not (tmp_path / "r").exists()


# -- reports: the coach's figures, each row's method, the coach's cost lines --------------------------

class _Run:
    """A run's records as reports read them: a TOA search valued by coach credit, a mappa selection."""

    def __init__(self, root, credit_record, facts, selector="mappa"):
        self.task, self.label, self.seed, self.iterations, self.selector, self.budget = "t", selector, 0, 1, selector, None
        self.config = {"synth": {"method": "toa", "models": "m2", "credit": "mappa"}}
        self.root, self.facts = root, facts
        (root / "it0" / "mcts").mkdir(parents=True)
        (root / "it0" / "mcts" / "credit.json").write_text(json.dumps(credit_record))

    def stage_dir(self, label):
        return self.root / label

    def selection_facts(self, iteration):
        return self.facts


def test_reports_tabulate_the_coach_and_say_how_each_policy_was_made(tmp_path):
    import jsonschema

    from harness.report import costs
    from harness.report.credit import credit_table, method_note
    from harness.report.leaderboard import SCHEMA

    rows = [{"agent": a, "action": "generate", "score": s, "parsed": True, "reward": r, "correct": c}
            for a, s, r, c in [("Alice", 9, 1.0, 1.0), ("Bob", 3, -0.5, 0.0), ("Alice", 7, 0.2, 1.0), ("Bob", 1, -1, 0.0)]]
    spent = {"actions": 4, "calls": 3, "cache_hits": 1, "prompt_tokens": 900, "completion_tokens": 12, "parsed": 4}
    record = {"coach": {"model": {"name": "coach-m"}, "sees_gold": False}, "summary": summary(rows), "spent": spent}
    facts = {"coach": {"model": {"name": "coach-m"}, "sees_gold": False}, "coach_spent": spent, "parse_rate": 1.0,
             "spearman_q": 0.05}
    run = _Run(tmp_path, record, facts)
    table = credit_table([run])
    search, selection = table.to_dict("records")
    assert (search["where"], search["signal"], search["coach_calls"]) == ("search", "-", 3)
    assert search["credit_by_agent"] == "Alice 8.00, Bob 2.00" and search["spearman_correct"] > 0.8
    assert (selection["where"], selection["signal"]) == ("selection", "no signal")  # |rho| 0.05 < NO_SIGNAL
    for row in json.loads(table.to_json(orient="records")):
        jsonschema.validate(row, SCHEMA["properties"]["credit"]["items"])
    assert method_note([run], table) == ("TOA search (models: m2); search valued by coach credit; "
                                         "MAPPA-style coach credit (DPO)")  # one use of the coach has signal
    quiet = table.assign(signal="no signal")
    assert method_note([run], quiet).endswith("; coach: no signal")
    # the selection's coach calls and tokens are its stage's cost lines
    stage = {"name": "select", "stage": "it0/select", "cost": {}}
    assert costs.coach_work(run, stage) == {f"coach_{k}": v for k, v in spent.items()}
    assert costs.coach_work(run, stage | {"name": "dpo"}) == {}


COACH_WRITER = """
import sys
from harness.backends.base import Backend, Completion
from harness.backends.response_cache import ResponseCache
from harness.credit.coach import Action, Coach

class Scorer(Backend):  # a coach that scores each action by the number it said
    def generate(self, requests, sampling, seed=0):
        return [Completion(f"PROCESS_SCORE: {r.messages[0]['content'].rsplit('said ', 1)[-1][:1]}", 1, 2, "stop", 0, (7,))
                for r in requests]
    def loglikelihood(self, choices): ...
    def turn_nll(self, texts): ...

coach = Coach(Scorer({"name": "scorer"}, None, 1), ResponseCache(sys.argv[1]), "hf")
first, last = int(sys.argv[2]), int(sys.argv[3])
for i in range(first, last):  # one action a call: many short transactions interleave
    coach.score([Action("Alice", "solver", [{"role": "user", "content": f"q{i}"}], f"said {i % 10}")])
print(coach.spent["calls"])
"""


def test_two_processes_share_one_coach_cache(tmp_path):
    """The coach's score cache under two writer processes at once (issue 26's concurrency): every action
    stored once, each read back as scored, and a third coach finds all of them without a call."""
    import subprocess
    import sys

    script = tmp_path / "coach_writer.py"
    script.write_text(COACH_WRITER)
    writers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), first, last],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for first, last in (("0", "150"), ("75", "225"))]
    calls = []
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        calls.append(int(out))
    assert sum(calls) >= 225  # each asked for what it did not find
    namespace = {}
    exec(COACH_WRITER.split("coach = Coach")[0], namespace)
    reader = Coach(namespace["Scorer"]({"name": "scorer"}, None, 1), ResponseCache(tmp_path / "cache"), "hf")
    scores = reader.score([Action("Alice", "solver", [{"role": "user", "content": f"q{i}"}], f"said {i % 10}")
                           for i in range(225)])
    assert reader.spent["calls"] == 0 and [s.score for s in scores] == [float(i % 10) for i in range(225)]
