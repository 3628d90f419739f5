"""DITS influence on its two paths, the same units on the same theta*, run interleaved. Used by
`harness bench` and `benchmarks/influence_paths.py`.

Both paths begin in turn (warm-up, theta*'s validation dialogues); then their units interleave, each
reference unit right after the fast path's step and checks of the same unit, so that a machine whose
speed drifts over the hour weighs on both alike. A path's unit seconds are its own.
"""

from __future__ import annotations

from harness import config, models
from harness.config import SelectConfig
from harness.dits.influence import PATHS, Estimate, prepare
from harness.errors import HarnessError
from harness.mas.dialogue import start
from harness.mas.roster import roster_for
from harness.tasks import get_task

ORDER = ("reference", "fast")


def gold_pairs(task_name: str, model: str, data_dir: str | None, n: int, roster: str | None = None,
               answer_mode: str = "choice") -> list[dict]:
    """`n` pairs, one a train question: the gold answer at Alice's first turn preferred over a wrong
    one (another option of the question where it has options, else the next question's answer), in
    the task's answer mode for `answer_mode` (`<A>...</A>` where it generates). Real search pairs have
    longer responses; a unit's cost is its validation dialogues either way."""
    team = roster_for(get_task(task_name).setting, roster)
    task = get_task(task_name, slots=team.slots)
    mode = task.answer_mode(answer_mode)
    sha = models.weights_hash(models.resolve(model))
    questions = task.load("train", data_dir, n + 1)
    if len(questions) < n + 1:
        raise HarnessError(f"{task_name}/train has {len(questions)} questions; {n + 1} needed")
    said = "{}" if mode == "choice" else "<A>{}</A>"
    rows = []
    for i, d in enumerate(start(questions[:n], team)):
        q = d.question
        gold = q.golds[0]
        wrong = next((o for o in q.options or () if o not in q.golds), None) or questions[i + 1].golds[0]
        rows.append({"pair_id": f"{task_name}:{q.id}/bench", "question_id": q.id, "task": task_name,
                     "answer_mode": mode, "policy": {"name": model, "sha256": sha}, "prompt": d.messages(0),
                     "chosen": f"Alice: {said.format(gold)}", "rejected": f"Alice: {said.format(wrong)}",
                     "q_chosen": 0.5, "q_rejected": 0.0})
    return rows


def interleaved(pairs: list[dict], preset: str, overrides: list[str]) -> dict[str, Estimate]:
    """Each path's estimate of `pairs` under the select section of `preset` with `overrides`."""
    began = {}
    for path in ORDER:
        cfg = config.build(SelectConfig, preset, overrides + [f"influence.path={path}"])
        impl = PATHS[path](pairs, cfg, *prepare(pairs, cfg))
        began[path] = (impl, impl.begin())
    (ref_path, ref_start), (fast_path, fast_start) = began["reference"], began["fast"]
    ref_scored = []

    def reference_unit(i: int) -> None:
        ref_scored.append(ref_path.unit_step(ref_start.theta_star, ref_start.units[i], ref_start.eta,
                                             ref_start.answers_before))

    fast_scored = fast_path.unit_scores(fast_start.theta_star, fast_start.units, fast_start.eta,
                                        fast_start.answers_before, "units, interleaved", between=reference_unit)
    return {path: impl.finish(start, scored, sum(impl.unit_seconds.values()))
            for (path, (impl, start)), scored in zip(began.items(), (ref_scored, fast_scored))}
