"""WebWalker's explorer and critic on the served sites: actions parsed from utterances, observations in
the agents' memories, episodes replayed, a scripted walker (no model) that follows every golden path of
the written sites through the environment to a page holding the answer, and an episode with tiny-random
through `harness eval`."""

import json
import re

import pytest

from harness.cli import main
from harness.config import WebConfig
from harness.errors import HarnessError
from harness.mas import web
from harness.mas.dialogue import Dialogue, Utterance, start
from harness.mas.roster import ROSTERS
from harness.tasks import get_task
from harness import tiny
from harness.tiny import WEB_LIMITS
from harness.web import generate, snapshot, splits
from harness.web.browser import Browser, LiveBrowser
from harness.web.pack import Pack
from harness.web.server import PackServers
from harness.web.world import WORLD

ROSTER = ROSTERS.get("web")


@pytest.mark.parametrize("text, action", [
    ("Explorer: Publications should list it. <click>4</click>", 4),
    ("<click> 12 </click>", 12),
    ("Explorer: wrong page, going back. <back>", "back"),
    ("<back/>", "back"),
    ("<click>2</click> no, rather <click>5</click>", 5),  # the last action counts
    ("<click>2</click> then <back>", "back"),
    ("Explorer: I would click 4.", None),
    ("<click>four</click>", None),
    ("", None),
])
def test_actions_are_read_from_the_utterance(text, action):
    assert web.parse_action(text) == action


def questions(split="test"):
    return get_task("webwalker").load(split)


def link_number(observation: str, anchor: str) -> int:
    found = re.findall(rf"^\[(\d+)\] {re.escape(anchor)}$", observation, flags=re.M)
    assert found, f"no link {anchor!r} on:\n{observation}"
    return int(found[0])


def test_a_scripted_walker_follows_every_golden_path_to_the_answer():
    """No model: the walker clicks each golden path's anchor texts from the root, through the same
    environment API the explorer acts in, and every source page it reaches holds the answer."""
    qs = [q for split in ("train", "validation", "test") for q in questions(split)]
    assert len({q.meta["root_url"] for q in qs}) == len(splits.WRITTEN)
    for q in qs:
        reached = []
        for path in q.meta["golden_path"]:
            episode = WORLD.episode(q.meta["pack_dir"], WebConfig())
            seen = episode.reset(q.meta["root_url"])
            for anchor in path.split("->")[1:]:
                seen = episode.click(link_number(seen.text, anchor))
                assert seen.status == "ok", (q.question, anchor, seen.text[:200])
            reached.append(seen.url)
            if q.meta["hop"] == "single_source":  # a multi-source answer is on its pages together
                assert q.golds[0].casefold() in seen.text.casefold(), q.question
        assert set(reached) == set(q.meta["source_website"]), q.question


def test_observations_reach_every_agent_and_replay_the_same():
    q = next(q for q in questions() if q.meta["golden_path"] == ["root->Publications"])
    d = start([q], ROSTER)[0]
    assert "The site's first page:\nPage: Harrowgate Birding Society" in d.systems[0]
    assert d.messages(0)[1]["content"].startswith(f"Question: {q.question}\nChoose a link")
    number = link_number(d.systems[0], "Publications")
    for text in (f"Explorer: the newsletter is a publication. <click>{number}</click>",
                 "Critic: the page names it.", "Explorer: nothing to click, I think."):
        u = Utterance(ROSTER.agents[d.next_agent].name, text, "", 5, 0, 0, False)
        if ROSTER.acting(d.next_agent):
            u.observation = web.observe(d, u.text)
        d.add(u, max_turns=10)
    publications, no_action = d.utterances[0].observation, d.utterances[2].observation
    assert publications.startswith("Page: Publications") and q.golds[0] in publications
    assert no_action == web.NO_ACTION
    explorer, critic = d.messages(0), d.messages(1)
    # Roles alternate; the page the explorer opened follows its own turn, before the critic's words.
    assert [m["role"] for m in explorer] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert explorer[3]["content"] == f"{publications}\n\nCritic: the page names it."
    assert [m["role"] for m in critic] == ["system", "user", "assistant", "user"]
    assert critic[1]["content"] == f"{d.utterances[0].text}\n\n{publications}"
    # A dialogue rebuilt from the utterances (a tree node, a re-decode) replays its episode to the same page.
    again = Dialogue(q, d.systems, roster=ROSTER)
    for u in d.utterances:
        again.add(u, max_turns=10)
    assert web.episode_of(again).trajectory == web.episode_of(d).trajectory
    assert [s.action for s in d.episode.trajectory] == ["reset", f"click {number}"]
    # Records of rosters without an environment write no observation key.
    assert "observation" in d.utterances[0].record() and "observation" not in Utterance("A", "x", "", 0, 0, 0, False).record()


def test_the_critic_answering_ends_the_dialogue_and_the_explorer_answering_does_not():
    q = questions()[0]
    d = start([q], ROSTER)[0]
    d.add(Utterance("Explorer", "Explorer: <A>x</A> <back>", "x", 1, 0, 0, False), max_turns=10)
    assert not d.done
    d.add(Utterance("Critic", "Critic: <A>The Wingbeat</A>", "The Wingbeat", 1, 0, 0, False), max_turns=10)
    assert d.stop == "answer" and d.final_answer == "The Wingbeat"


def test_real_questions_without_a_served_site_are_skipped_and_counted(shared_data, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("harness.tasks.base._WARNED_SAMPLES", set())  # said once a process: earlier tests said it
    data = tmp_path / "data"
    (data / "webwalker").mkdir(parents=True)
    real = (shared_data / "webwalker" / "test.jsonl").read_text().splitlines()[:5]
    (data / "webwalker" / "test.jsonl").write_text("\n".join(real) + "\n")
    written = get_task("webwalker").load("test", data_dir=data)  # the test wikis not built: left out, said once
    assert {q.meta["root_url"] for q in written} == {Pack.load(splits.SITES / n).root_url for n in splits.WRITTEN}
    assert "not built: their test questions are left out (run `harness data build-web" in caplog.text
    for dataset in ("hotpotqa", "2wmh"):  # small wikis: the split's generated packs, after the written sites
        rows = [json.loads(line) for line in (shared_data / dataset / "test.jsonl").read_text().splitlines()[:8]]
        generate.generate_pack(rows, dataset, "test", splits.packs_dir(data) / splits.pack_name(dataset, "test"))
    qs = get_task("webwalker").load("test", data_dir=data)
    packs = [splits.pack_dir(n, data) for n in splits.DEFAULT_PACKS["test"]]
    assert [q.meta["pack_dir"] for q in qs] == [str(p) for p in packs for _ in (p / "qa" / "test.jsonl").read_text().splitlines()]
    assert "5 of 5 questions skipped: no site pack or snapshot serves their root URL" in caplog.text


def test_an_episode_with_tiny_random_is_recorded(tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--task", "webwalker", "--model", "tiny-random", "--limit", "2", "--out", str(out),
                 "max_turns=4", "max_new_tokens=16"]) == 0
    records = [json.loads(line) for line in (out / "per_instance.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        steps = r["trajectory"]["steps"]
        assert steps[0]["action"] == "reset" and steps[0]["url"].startswith("https://")
        explorer_turns = [u for u in r["transcript"] if u["speaker"] == "Explorer"]
        assert explorer_turns and all("observation" in u for u in explorer_turns)
        assert all("observation" not in u for u in r["transcript"] if u["speaker"] == "Critic")
        assert "127.0.0.1" not in json.dumps(r)  # agents and records see canonical URLs, never the transport


def test_tiny_web_fitted_on_scripted_episodes_clicks_its_way_to_an_answer(tmp_path):
    # tiny-web is tiny-fitted fitted on the written sites' scripted train episodes: on those questions
    # its clicks must open the golden pages through the served site and its critic give the gold.
    out = tmp_path / "eval"
    assert main(["eval", "--task", "webwalker", "--model", "tiny-web", "--split", "train", "--out", str(out),
                 "max_turns=12", "max_new_tokens=48", f"web.page_chars={WEB_LIMITS.page_chars}"]) == 0
    records = [json.loads(line) for line in (out / "per_instance.jsonl").read_text().splitlines()]
    assert json.loads((out / "run_spec.json").read_text())["web_setting"] == "given URL, click only"
    right = [r for r in records if r["score"] == 1.0]
    assert right, [r["prediction"] for r in records]
    for r in right:
        assert r["stop"] == "answer" and r["prediction"] == r["gold"][0]
        assert any(step["action"].startswith("click") for step in r["trajectory"]["steps"])


def test_tiny_web_follows_both_paths_of_a_generated_question_to_its_answer(tmp_path):
    # tiny-web is also fitted on its generated wiki's scripted train episodes (`tiny.web_wiki`, built
    # here as `harness data build-web` would): a right answer must have opened both source pages.
    data = tmp_path / "data"
    qa = [json.loads(line) for line in (tiny.web_wiki(data) / "qa" / "train.jsonl").read_text().splitlines()]
    sources = {q["id"]: set(q["info"]["source_website"]) for q in qa}
    out = tmp_path / "eval"
    assert main(["eval", "--task", "webwalker", "--model", "tiny-web", "--split", "train", "--data-dir", str(data),
                 "--out", str(out), "max_turns=16", "max_new_tokens=48",
                 f"web.page_chars={WEB_LIMITS.page_chars}"]) == 0
    records = [json.loads(line) for line in (out / "per_instance.jsonl").read_text().splitlines()]
    assert len(records) == tiny.WEB_WIKI_ROWS
    right = [r for r in records if r["score"] == 1.0]
    assert right, [r["prediction"] for r in records]
    for r in right:
        visited = {step["url"] for step in r["trajectory"]["steps"]}
        assert r["stop"] == "answer" and len(sources[r["id"]]) == 2 and sources[r["id"]] <= visited, r["trajectory"]
        assert r["trajectory"]["sources"] == r["trajectory"]["sources_opened"] == 2
    # the breakdown by the questions' labels covers every record under each label
    stats = json.loads((out / "stats.json").read_text())
    by_label = {}
    for row in stats["breakdown"]:
        by_label.setdefault(row["label"], []).append(row)
    assert set(by_label) == set(get_task("webwalker").breakdown)
    assert all(sum(row["n"] for row in rows) == len(records) for rows in by_label.values())
    assert stats["sources_opened_rate"] == sum(r["trajectory"]["sources_opened"] == 2 for r in records) / len(records)


# -- snapshots of live sites ---------------------------------------------------------------------

def test_a_snapshot_replays_the_site_it_froze_and_marks_stale_questions(tmp_path):
    """`harness data snapshot-web` on a served pack (the nearest thing to a live site here): every page
    of the snapshot shows what the site showed, and a question whose source is gone is stale."""
    site = splits.SITES / "harrowgatebirds"
    original = Pack.load(site)
    rows = [json.loads(line) for line in (site / "qa" / "test.jsonl").read_text().splitlines()]
    gone = {**rows[0], "question": "Where is the hide?", "info": {**rows[0]["info"], "source_website": [
        original.root_url + "hides/north"]}}
    single = next(r for r in rows if r["info"]["hop"] == "single_source")
    moved = {**single, "question": "What is the prize?", "answer": "a golden owl"}
    with PackServers([original]) as served:
        stats = snapshot.snapshot(Browser(served), original.root_url, tmp_path / "snap", [*rows, gone, moved],
                                  name="harrowgate-snap")
    assert stats["pages"] == stats["reachable"] == len(original.pages)
    assert stats["questions"] == len(rows) and stats["stale"] == 2
    assert stats["stale_reasons"] == [f"source page not captured: {original.root_url}hides/north",
                                      "the answer is not on its source page"]
    assert stats["fetches"] == {"ok": len(original.pages), "broken": 1}
    frozen = Pack.load(tmp_path / "snap")
    assert frozen.source == "snapshot" and frozen.root_url == original.root_url
    for key in original.pages:  # replay: the same observation of every page
        shown = []
        for pack in (original, frozen):
            with PackServers([pack]) as served:
                shown.append(Browser(served).fetch(original.root.url_for(key)).page)
        assert shown[0] == shown[1], key


def test_a_live_snapshot_reaches_the_site_itself(tmp_path):
    """The live transport (the site's own host and port, no pack server in between) on a loopback site."""
    with PackServers([Pack.load(splits.SITES / "fedge-workshop")]) as served:
        live_root = f"http://127.0.0.1:{next(iter(served.values()))}/"
        stats = snapshot.snapshot(LiveBrowser([live_root]), live_root, tmp_path / "live", [], max_pages=10)
    assert stats["pages"] == 10 and stats["fetches"] == {"ok": 10}
    assert LiveBrowser([live_root]).fetch("https://elsewhere.example/").status == "refused"
    with pytest.raises(HarnessError, match="root page could not be opened .*nothing written"):
        snapshot.snapshot(LiveBrowser(["http://127.0.0.1:9/"]), "http://127.0.0.1:9/", tmp_path / "none", [])
    assert not (tmp_path / "none").exists()


def test_a_snapshot_in_the_data_directory_serves_the_real_questions_about_its_site(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.tasks.base._WARNED_SAMPLES", set())
    site = splits.SITES / "greenfieldcc"
    rows = [json.loads(line) for line in (site / "qa" / "test.jsonl").read_text().splitlines()]
    single = next(r for r in rows if r["info"]["hop"] == "single_source")
    stale = {**single, "question": "Which scholarship is for astronauts?", "answer": "none such"}
    data = tmp_path / "data"
    (data / "webwalker").mkdir(parents=True)
    (data / "webwalker" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, stale]))
    with PackServers([Pack.load(site)]) as served:
        snapshot.snapshot(Browser(served), rows[0]["root_url"], splits.packs_dir(data) / "greenfield-snap", [*rows, stale])
    qs = get_task("webwalker").load("validation", data_dir=data)  # the validation wikis are not built: left out
    assert [q.question for q in qs] == [r["question"] for r in rows]
    assert {q.meta["pack_dir"] for q in qs} == {str(splits.packs_dir(data) / "greenfield-snap")}


def test_the_smoke_run_goes_through_every_stage_on_generated_sites(shared_data, tmp_path):
    """`harness run --task webwalker --preset smoke` on wikis built from the real HotpotQA and 2WMH
    samples: the explorer and critic through SFT data, SFT, the tree search, selection, DPO and eval."""
    data = tmp_path / "data"
    data.mkdir()
    for dataset in ("hotpotqa", "2wmh"):
        (data / dataset).symlink_to(shared_data / dataset)
    assert main(["data", "build-web", "--data-dir", str(data)]) == 0
    out = tmp_path / "runs"
    assert main(["run", "--selector", "random", "--task", "webwalker", "--preset", "smoke", "--data-dir", str(data),
                 "--suite", "web", "--out", str(out)]) == 0
    run = next(p for p in out.iterdir() if p.name.startswith("run:"))
    scores = json.loads((run / "results.json").read_text())["scores"]
    assert [s["policy"] for s in scores] == ["initial", "sft", "dpo"] and all(s["n"] == 8 for s in scores)
    pairs = [json.loads(line) for line in (run / "it0" / "select" / "selected.jsonl").read_text().splitlines()]
    assert pairs and all(p["task"] == "webwalker" and p["roster"] == "web" for p in pairs)
    trees = next(out.rglob("trees.jsonl")).read_text()
    assert '"observation"' in trees  # the search's dialogues saw the pages they opened
