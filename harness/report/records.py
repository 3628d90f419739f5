"""A suite's runs read back from their records: specs, results, per-item scores and stage costs.

Reports never recompute anything: every number comes from a file a stage wrote, and they import no
engine, training, method or torch to read it (what a selector is comes from its selection's record).
A run belongs in a report only when finished, and runs compared with each other must agree on every
key but the ones that make them differ on purpose (the selector, its knobs, the seed, a budget
point). Records written by commit a80c8ba and before are read too (`legacy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness import config as cfgmod
from harness.config import SelectConfig
from harness.errors import HarnessError
from harness.records import cost, status
from harness.records import spec as specmod
from harness.report import legacy
from harness.runs import read_json, read_jsonl

# Keys every run of a task shares except these: a comparison differs only by them.
# (Training keys such as dpo.lr do not change the shared stages, but they do change what is compared.)
FREE_KEYS = {"run": {"selector", "gamma", "alpha", "seed", "budget", "suite", "out"}, "synth": {"seed"}, "eval": {"seed"},
             "select": {"seed", "selector", "gamma", "alpha"}}


@dataclass
class Run:
    path: Path
    spec: dict
    results: dict

    @property
    def config(self) -> dict:
        return {section: cfgmod.recorded(section, values) for section, values in self.spec["config"].items()}

    @property
    def task(self) -> str:
        return self.results["task"]

    @property
    def seed(self) -> int:
        return self.results["seed"]

    @property
    def selector(self) -> str:
        return self.results["selector"]

    @property
    def budget(self) -> str | None:
        return self.config["run"].get("budget")

    @cached_property
    def traits(self) -> dict:
        """The selector's traits (uses influence, keeps all, kind) as its first selection recorded them."""
        path = self.stage_dir("it0/select") / specmod.FILE
        recorded = read_json(path).get("selector_traits")
        return recorded or legacy.selector_traits(self.selector, path)

    @property
    def label(self) -> str:
        """The selector as a suite names it: `dits:gamma=0`, `random`, `qvalue:alpha=0.3`."""
        select = self.config["select"]
        knobs = []
        if self.traits["influence"]:
            knobs.append(f"gamma={select['gamma']:g}")
        if not self.traits["keeps_all"] and select["alpha"] != SelectConfig.alpha:
            knobs.append(f"alpha={select['alpha']:g}")
        return self.selector + (":" + ",".join(knobs) if knobs else "")

    @property
    def iterations(self) -> int:
        return self.config["run"]["iterations"]

    def stage_dir(self, label: str) -> Path:
        for stage in self.spec["stages"]:
            if stage["stage"] == label:
                return self.relocated(stage["path"])
        raise HarnessError(f"{self.path}: no stage {label!r} in run_spec.json")

    def relocated(self, recorded: str) -> Path:
        return specmod.relocate(self.spec, self.path, recorded)

    def eval_label(self, policy: str) -> str:
        return {"initial": "eval", "sft": "it0/eval_sft", "dpo": f"it{self.iterations - 1}/eval"}[policy]

    def item_scores(self, policy: str) -> dict[str, float]:
        """Test item id -> score of one evaluated policy (initial, sft or the final dpo), refused where
        the file holds fewer items than the evaluation scored (a cut file would pair a subset)."""
        path = self.stage_dir(self.eval_label(policy)) / "per_instance.jsonl"
        scores = {}
        for line, row in read_jsonl(path):
            if "id" not in row or "score" not in row:
                raise HarnessError(f"{path}:{line}: no {'id' if 'id' not in row else 'score'} key")
            scores[row["id"]] = row["score"]
        scored = self.score(policy)["n"]
        if len(scores) != scored:
            raise HarnessError(f"{path}: {len(scores)} distinct items, but {self.path / 'results.json'} says the "
                               f"evaluation scored {scored}: the file is cut or not this run's")
        return scores

    def score(self, policy: str) -> dict:
        final = self.iterations - 1 if policy == "dpo" else None
        found = [r for r in self.results["scores"] if r["policy"] == policy and (final is None or r["iteration"] == final)]
        if not found:
            raise HarnessError(f"{self.path / 'results.json'}: no score of the {policy} policy"
                               + (f" at iteration {final}" if final is not None else ""))
        return found[0]

    @cached_property
    def stages(self) -> list[dict]:
        """Every stage the run used, shared ones included, with its wall seconds, device and recorded
        work: from its cost record, or for older records, its ledger line and its own files."""
        ledger = None
        out = []
        for stage in self.spec["stages"]:
            path = self.relocated(stage["path"])
            record = cost.read(path)
            if record is None:
                # the ledgers of the shared stages, of the run, and of the folder a stage sits in (the
                # initial evaluation's own)
                homes = [self.relocated(self.spec["shared_stages"]), self.path,
                         *(self.relocated(s["path"]).parent for s in self.spec["stages"])]
                ledger = ledger if ledger is not None else legacy.ledger_rows(
                    [home / "ledger.jsonl" for home in dict.fromkeys(homes)])
                record = legacy.stage_cost(stage["stage"], stage["stage"].rpartition("/")[2], path, ledger, self.path)
            out.append({"stage": stage["stage"], "name": record["name"], "shared": stage["shared"],
                        "device": record["device"], "wall_seconds": record["wall_seconds"], "cost": record["work"]})
        return out

    def selection_scores(self, iteration: int) -> list[dict]:
        return [row for _, row in read_jsonl(self.stage_dir(f"it{iteration}/select") / "scores.jsonl")]

    def selection_facts(self, iteration: int) -> dict:
        """What the selector recorded about its choice (DITS: the influence estimate and its resolution)."""
        path = self.stage_dir(f"it{iteration}/select") / specmod.FILE
        return _key(read_json(path), "selector_facts", path)

    def influence_fallbacks(self) -> list[str | None]:
        """Per iteration of an influence selector, what its degenerate influence fell back to (None
        where it resolved the units); empty for other selectors. Records older than the check have none."""
        if not self.traits["influence"]:
            return []
        return [self.selection_facts(it)["resolution"].get("degenerate") for it in range(self.iterations)]


# What reports read of a run's records without looking further.
SPEC_KEYS = ("run_id", "config", "stages", "shared_stages", "device")
RESULTS_KEYS = ("task", "seed", "selector", "scores", "training")


def load_run(path: Path) -> Run:
    """A finished run's records, refused in one line where one lacks what reports read."""
    spec, results = read_json(path / specmod.FILE), read_json(path / "results.json")
    for record, keys, name in ((spec, SPEC_KEYS, specmod.FILE), (results, RESULTS_KEYS, "results.json")):
        for key in keys:
            _key(record, key, path / name)
    return Run(path, spec, results)


def _key(record, key: str, path: Path):
    if not isinstance(record, dict) or key not in record:
        raise HarnessError(f"{path}: no {key!r} key (a run record of this harness has one)")
    return record[key]


def load_suite(root: Path, allow_unfinished: bool = False) -> list[Run]:
    """The runs under `root` (a suite directory), finished ones only; refuses unfinished ones unless
    `allow_unfinished`, in which case they are left out."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: no such suite directory")
    out = []
    for spec_path in sorted(root.glob(f"*/{specmod.FILE}")):
        spec = read_json(spec_path)
        if not isinstance(spec, dict) or spec.get("kind") != "run":
            continue
        state = status.read(spec_path.parent)
        if state["state"] != "complete":
            if allow_unfinished:
                continue
            where = f" at stage {state['stage']}" if state.get("stage") else ""
            raise HarnessError(f"{spec_path.parent}: the run is unfinished ({state['state']}{where}); finish it "
                               "with harness run --resume, or remove it from the suite")
        out.append(load_run(spec_path.parent))
    if not out:
        raise HarnessError(f"{root}: no finished runs (a suite directory holds one folder per run)")
    return out


def check_comparable(runs: list[Run]) -> None:
    """Runs of one task must share every key but the free ones; refuses naming the keys that differ."""
    first: dict[str, Run] = {}
    for run in runs:
        ref = first.setdefault(run.task, run)
        free = {section: keys | _budget_keys(run, section) | _budget_keys(ref, section)
                for section, keys in FREE_KEYS.items()}
        mine, theirs = ({section: cfgmod.flatten(values) for section, values in r.config.items()} for r in (run, ref))
        differ = sorted(f"{section}.{k}" for section in mine
                        for k in set(mine[section]) | set(theirs.get(section, {}))
                        if k not in free.get(section, set()) and not specmod.execution_key(k)
                        and mine[section].get(k) != theirs.get(section, {}).get(k))
        if differ:
            raise HarnessError(f"{run.path.name} and {ref.path.name} differ in {', '.join(differ)}: runs of one "
                               f"report must share their configs but for the selector, seed and budget")


def _budget_keys(run: Run, section: str) -> set[str]:
    """The fields of `section` (dotted, as `cfgmod.flatten` names them) that the run's budget point sets."""
    names = (item.partition("=")[0] for item in (run.budget or "").split(","))
    return {field for name in names if name.partition(".")[0] == section for field in cfgmod.reached(name, section)}
