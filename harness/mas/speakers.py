"""Who speaks for each agent: the policy's backend, and one backend per frozen speaker's model.

A turn's requests are grouped by the speaking agent's backend, one call a group. When a turn splits
over several backends, each request carries the sampling seed it has in one call over the whole
turn (`Backend.sample_seeds`), so what an agent samples does not depend on who else speaks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from harness.backends.base import Backend, Choice, Completion, Request, Sampling
from harness.errors import HarnessError
from harness.mas.roster import Agent, Roster


class Speakers:
    def __init__(self, policy: Backend, frozen: Mapping[str, Backend] | None = None):
        self.policy = policy
        self.frozen = dict(frozen or {})  # model name -> backend

    @classmethod
    def of(cls, speakers: Backend | Speakers) -> Speakers:
        """A single backend speaks for every agent (a roster without frozen speakers)."""
        return speakers if isinstance(speakers, Speakers) else cls(speakers)

    @classmethod
    def for_roster(cls, roster: Roster, policy: Backend, build: Callable[[str], Backend],
                   policy_model: str | None = None) -> Speakers:
        """The policy's backend and one built (`build(model)`) per frozen model of the roster; a
        frozen model named as the policy was loaded (`policy_model`) shares the policy's backend."""
        return cls(policy, {m: policy if m == policy_model else build(m) for m in roster.frozen_models})

    def backend(self, agent: Agent) -> Backend:
        if not agent.frozen:
            return self.policy
        if agent.model not in self.frozen:
            raise HarnessError(f"{agent.name} speaks with the frozen model {agent.model!r}, which has no backend here "
                               "(build the speakers with Speakers.for_roster)")
        return self.frozen[agent.model]

    def backends(self) -> list[Backend]:
        return list({id(b): b for b in (self.policy, *self.frozen.values())}.values())

    def frozen_info(self) -> dict[str, dict]:
        """The frozen speakers' model identities, by model name (for run records)."""
        return {m: b.model_info for m, b in self.frozen.items()}

    def generate(self, agents: list[Agent], requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]:
        """One completion per request, each from its agent's backend."""
        groups = self._groups(agents)
        if len(groups) == 1:
            backend, _ = groups[0]
            return backend.generate(requests, sampling, seed=seed)
        seeds = Backend.sample_seeds(requests, seed)
        out: list = [None] * len(requests)
        for backend, rows in groups:
            for i, c in zip(rows, backend.generate([replace(requests[i], seed=seeds[i]) for i in rows], sampling,
                                                   seed=seed)):
                out[i] = c
        return out

    def loglikelihood(self, agents: list[Agent], choices: list[Choice]) -> list[list[tuple[float, int]]]:
        """Each choice scored by its agent's backend (`Backend.loglikelihood`)."""
        out: list = [None] * len(choices)
        for backend, rows in self._groups(agents):
            for i, scored in zip(rows, backend.loglikelihood([choices[i] for i in rows])):
                out[i] = scored
        return out

    def release(self, cache_key_prefix: str) -> None:
        for backend in self.backends():
            backend.release(cache_key_prefix)

    def _groups(self, agents: list[Agent]) -> list[tuple[Backend, list[int]]]:
        groups: dict[int, tuple[Backend, list[int]]] = {}
        for i, agent in enumerate(agents):
            backend = self.backend(agent)
            groups.setdefault(id(backend), (backend, []))[1].append(i)
        return list(groups.values())
