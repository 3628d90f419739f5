"""A web roster's environment between turns (`Roster.web`): each utterance of an acting agent (the
explorer) is an action on the question's site, and what the site shows back is that utterance's
`observation`, which every agent reads after the utterance.

Actions: `<click>N</click>` opens link N of the current page, `<back>` returns to the previous page;
the last action in an utterance counts, and an utterance without one is told how to act (no step is
taken). Observations are environment input: they are in the agents' memories as `user` text, so
they are never trained on and never counted as generated tokens.

A dialogue's episode is rebuilt by replaying its actions whenever it is missing (a tree search
continues a dialogue from a node, the influence paths re-decode from a turn): episodes are
deterministic, so a replay shows what the first run showed.
"""

from __future__ import annotations

import re
from dataclasses import asdict

from harness.errors import HarnessError
from harness.mas.prompts import NO_ACTION
from harness.tasks.base import Question
from harness.web.browser import SHOWN
from harness.web.env import Observation, WebEnvironment
from harness.web.pack import canonical_url
from harness.web.world import WORLD

ACTION = re.compile(r"<click>\s*(\d+)\s*</click|<back\s*/?>")


def parse_action(text: str) -> int | str | None:
    """The utterance's action: a link number, "back", or None when it names none (last one wins)."""
    found = list(ACTION.finditer(text))
    if not found:
        return None
    last = found[-1]
    return int(last.group(1)) if last.group(1) else "back"


def pack_dir(question: Question) -> str:
    pack = question.meta.get("pack_dir")
    if not pack:
        raise HarnessError(f"question {question.id}: no site pack serves {question.meta.get('root_url', 'its site')}")
    return pack


def opened(question: Question, roster) -> tuple[WebEnvironment, str]:
    """A new episode on the question's site, at its first page, and what that page shows: the web
    roles' `${information}`."""
    episode = WORLD.episode(pack_dir(question), roster.web)
    return episode, episode.reset(question.meta["root_url"]).text


def act(episode: WebEnvironment, text: str) -> Observation | None:
    action = parse_action(text)
    if action is None:
        return None
    return episode.back() if action == "back" else episode.click(action)


def observe(d, text: str) -> str:
    """The observation of an acting agent's utterance `text`, about to be added to dialogue `d`."""
    episode = episode_of(d)
    seen = act(episode, text)
    d.episode_actions += 1
    return NO_ACTION if seen is None else seen.text


def episode_of(d) -> WebEnvironment:
    """The dialogue's episode as its utterances so far left it (replayed if the dialogue has none)."""
    acted = [u for i, u in enumerate(d.utterances) if d.roster.acting(d.roster.speaker(i))]
    if d.episode is None or d.episode_actions != len(acted):
        d.episode, _ = opened(d.question, d.roster)
        for u in acted:
            act(d.episode, u.text)
        d.episode_actions = len(acted)
    return d.episode


def trajectory(d) -> dict:
    """The episode's record for a dialogue's per-instance line: each step, the outcomes' counts, the
    pages it opened and how many of the question's source pages were among them (how far the
    explorer got, where the answer says nothing)."""
    episode = episode_of(d)
    opened = {s.url for s in episode.trajectory if s.action != "back" and s.status in SHOWN}
    sources = {canonical_url(url, url) for url in d.question.meta.get("source_website", [])}
    return {"steps": [asdict(s) for s in episode.trajectory], "counts": episode.counts, "pages": len(opened),
            "sources": len(sources), "sources_opened": len(sources & opened)}


def scripted(question: Question, roster) -> "Dialogue":
    """A scripted episode for a cold start (no model): the explorer clicks each golden path's anchor
    texts from the root (back to the root between paths), the critic notes each page and answers
    with the gold on the last one. SFT on these teaches the protocol, not the sites."""
    from harness.mas.dialogue import Dialogue, Utterance

    explorer, critic = (a.name for a in roster.agents)
    episode, page = opened(question, roster)
    d = Dialogue(question, roster.system_prompts(question, page), roster=roster, episode=episode)

    def say(text: str, answer: str = "") -> None:
        u = Utterance(d.roster.agents[d.next_agent].name, text, answer, 0, 0, 0, False)
        if d.roster.acting(d.next_agent):
            u.observation = observe(d, text)
        d.add(u, max_turns=10_000)

    paths = [p.split("->")[1:] for p in question.meta.get("golden_path", [])]
    for k, path in enumerate(paths):
        for _ in paths[k - 1] if k else ():  # back to the first page for the next source
            say(f"{explorer}: the rest is on another page; back. <back>")
            say(f"{critic}: noted; the rest is still missing.")
        for j, anchor in enumerate(path):
            here = episode_of(d).page
            number = next((link.number for link in here.links if link.text == anchor), None)
            if number is None:
                raise HarnessError(f"question {question.id}: its golden path's link {anchor!r} is not on {here.url}")
            say(f"{explorer}: {anchor} should lead to it. <click>{number}</click>")
            if k == len(paths) - 1 and j == len(path) - 1:
                say(f"{critic}: <A>{question.golds[0]}</A>", question.golds[0])
            else:
                say(f"{critic}: not there yet.")
    return d
