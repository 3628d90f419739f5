"""One episode on a served site: what the agents do (reset, click, back) and what they read.

WebWalker's "given URL, click only" setting: the episode opens the site's root page, and the agent
moves only by clicking a numbered link of the page it is on (WebWalker clicks a button by its text)
or going back (WebWalker has no back: its prompt tells the agent to revisit the previous page
through the buttons). WebWalker bounds an episode by its action count (`action_count`, 10 to 15 in
its demo); here `WebConfig` bounds the actions, the distinct pages fetched, and what one
observation shows (`page_chars` of text, `max_links` links), which is what an episode costs.

Nothing an agent does raises: a number that is no link, a back on the first page, a broken link,
a bound reached are each an observation (with a status, counted in `counts`). Every step is in
`trajectory`. A page is fetched once an episode and shown from then on as fetched, and no
observation holds the transport's port, so the same pack and actions give the same observations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from harness.config import WebConfig
from harness.errors import HarnessError
from harness.web.browser import Browser, Fetch
from harness.web.pack import Root
from harness.web.page import Page

# WebWalkerQA's name for this setting, in every web evaluation's record (its leaderboard mixes it with
# a setting that adds search)
SETTING = "given URL, click only"

# What an agent is told about a link that gave no page.
REASONS = {
    "broken": "the page does not exist (a broken link)",
    "not_html": "it is a file, not a web page",
    "redirect_loop": "it redirects in a loop or too many times",
    "timeout": "the site did not send the page in time",
    "refused": "it leads outside the site",
    "error": "the site could not be reached",
}


@dataclass(frozen=True)
class Observation:
    text: str  # what the agent reads
    url: str  # the canonical URL of the page the agent is on
    status: str  # the action's outcome: a fetch status, bad_action, page_limit or done
    done: bool  # the episode is over: no further action is taken


@dataclass(frozen=True)
class Step:
    action: str  # "reset", "click <n>", "back"
    url: str  # the canonical URL the action opened or tried
    status: str
    chars: int  # characters of text shown


class WebEnvironment:
    def __init__(self, sites: Mapping[str, int], limits: WebConfig = WebConfig()):
        """`sites`: root URL -> port of the served packs (`PackServers`)."""
        self.limits = limits
        self.browser = Browser(sites, limits.max_bytes, limits.fetch_timeout_s, limits.max_redirects)
        self._roots = sorted(Root.of(url).url for url in sites)
        self._start()

    def _start(self) -> None:
        self.trajectory: list[Step] = []
        self.done = False
        self._counts: Counter[str] = Counter()
        self._fetched: dict[str, Fetch] = {}  # this episode's fetches by URL
        self._history: list[Page] = []  # the pages the agent went through; the last is the current
        self._steps = 0

    @property
    def page(self) -> Page | None:
        """The page the agent is on (None before a reset, or when the first page failed)."""
        return self._history[-1] if self._history else None

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def reset(self, root_url: str) -> Observation:
        root = Root.of(root_url)
        if root.url not in self._roots:
            raise HarnessError(f"{root_url}: no site pack serves it (served: {', '.join(self._roots) or 'none'})")
        self._start()
        fetched = self._fetch(root.url)
        if fetched.page is None:
            self.done = True
            text = (f"The site's first page {root.url} could not be opened: {REASONS[fetched.status]}. "
                    "The episode is over.")
            return self._record("reset", root.url, fetched.status, text)
        self._history.append(fetched.page)
        return self._record("reset", fetched.page.url, fetched.status, self._show(fetched.page))

    def click(self, number: int) -> Observation:
        action = f"click {number}"
        if self._over():
            return self._record(action, self._here(), "done", "The episode is over: no further action is taken.")
        page = self._history[-1]
        shown = page.links[:self.limits.max_links]
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(shown):
            hint = f"choose a number from 1 to {len(shown)}" if shown else "this page has no links; go back"
            return self._act(action, page.url, "bad_action", f"There is no link [{number}] on this page: {hint}.")
        link = shown[number - 1]
        if link.url not in self._fetched and len(self._fetched) >= self.limits.max_pages:
            self.done = True
            text = f"Page limit reached: {self.limits.max_pages} pages opened. The episode is over."
            return self._act(action, link.url, "page_limit", text)
        fetched = self._fetch(link.url)
        if fetched.page is None:
            text = (f'Link [{number}] "{link.text}" could not be opened: {REASONS[fetched.status]}.\n'
                    f"You are still on {page.url}.\n\n{page.render_links(self.limits.max_links)}")
            return self._act(action, link.url, fetched.status, text)
        self._history.append(fetched.page)
        return self._act(action, fetched.page.url, fetched.status, self._show(fetched.page))

    def back(self) -> Observation:
        if self._over():
            return self._record("back", self._here(), "done", "The episode is over: no further action is taken.")
        if len(self._history) < 2:
            text = "There is no previous page: this is the first page of the episode."
            return self._act("back", self._here(), "bad_action", text)
        self._history.pop()
        return self._act("back", self._here(), "ok", self._show(self._history[-1]))

    def _over(self) -> bool:
        if not self.trajectory:
            raise HarnessError("the web episode has not started: call reset(root_url) first")
        return self.done

    def _here(self) -> str:
        return self._history[-1].url if self._history else self.trajectory[0].url

    def _fetch(self, url: str) -> Fetch:
        if url not in self._fetched:
            self._fetched[url] = self.browser.fetch(url)
        return self._fetched[url]

    def _show(self, page: Page) -> str:
        return page.render(self.limits.page_chars, self.limits.max_links)

    def _act(self, action: str, url: str, status: str, text: str) -> Observation:
        """An action's observation; the last action allowed says so and ends the episode."""
        self._steps += 1
        if self._steps >= self.limits.max_steps and not self.done:
            self.done = True
            text += (f"\n\nStep limit reached: that was action {self._steps} of {self.limits.max_steps}. "
                     "The episode is over.")
        return self._record(action, url, status, text)

    def _record(self, action: str, url: str, status: str, text: str) -> Observation:
        self.trajectory.append(Step(action, url, status, len(text)))
        self._counts[status] += 1
        return Observation(text, self._here() if self._history else url, status, self.done)
