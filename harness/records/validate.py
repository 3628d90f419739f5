"""`harness validate --run DIR`: a run directory's records checked against themselves: its
run_spec against the schema, every finished stage against its manifest and its cost record against
theirs, and the status against the stages."""

from __future__ import annotations

import json
from pathlib import Path

from harness.records import cost, manifest, schemas, spec, status


def validate_run(run_dir: Path) -> tuple[dict, list[str]]:
    """(the run's status, one line per problem: empty when the records are consistent)."""
    run_dir = Path(run_dir)
    path = run_dir / spec.FILE
    if not path.is_file():
        return {}, [f"{path}: missing (not a run directory)"]
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return {}, [f"{path}: not valid JSON ({e.msg})"]
    if not spec.versioned(recorded):
        return {}, [f"{path}: no schema_version: written by an older harness (commit a80c8ba or before); "
                    "reports read it, it is neither resumed nor checked"]
    problems = schemas.problems(recorded, "run_spec", path)
    if problems:
        return {}, problems
    if recorded["kind"] != "run":
        return {}, [f"{path}: a {recorded['kind']} record, not a run's (harness run writes those)"]
    state = status.read(run_dir)
    finished = []
    for stage in recorded["stages"]:
        where = spec.relocate(recorded, run_dir, stage["path"])
        if not (where / manifest.FILE).exists():
            finished.append(False)
            continue
        finished.append(True)
        found = manifest.problems(where)
        if not found and not (where / cost.FILE).is_file():
            found = [f"no {cost.FILE}"]
        elif not found:
            found = schemas.problems(json.loads((where / cost.FILE).read_text()), "stage_cost", cost.FILE)
        problems += [f"{stage['stage']} ({where}): {line}" for line in found]
    labels = [s["stage"] for s in recorded["stages"]]
    for i, done in enumerate(finished):
        if done and not all(finished[:i]):
            first = labels[finished.index(False)]
            problems.append(f"{labels[i]} is finished but {first}, before it, is not (a resume redoes {first})")
            break
    if state["state"] == "complete":
        missing = [label for label, done in zip(labels, finished) if not done]
        if missing:
            problems.append(f"{run_dir / status.FILE}: complete, but {', '.join(missing)} not finished")
        if not (run_dir / "results.json").is_file():
            problems.append(f"{run_dir / status.FILE}: complete, but there is no results.json")
    return state, problems
