"""`harness report`: a suite's tables and pictures, written into one directory at once."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.cache import cache_root
from harness.config import RunConfig
from harness.errors import HarnessError
from harness.report import costs, plots, tables
from harness.report.credit import credit_table, method_notes, model_table
from harness.report.records import Run, check_comparable, load_suite

log = logging.getLogger(__name__)
CHECKOUT = Path(__file__).parents[2]  # the folder holding the harness package


@dataclass
class Report:
    suite: Path
    runs: list[Run]
    comparison: pd.DataFrame
    ledger: pd.DataFrame
    cost_per_gain: pd.DataFrame
    curve_points: pd.DataFrame
    cost_to_target: pd.DataFrame
    target: str
    baselines: tuple[str, ...]
    influence: pd.DataFrame
    credit: pd.DataFrame  # the coach's figures, where a coach scored (harness.report.credit)
    search_models: pd.DataFrame  # TOA's acting models, where several acted
    plots: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The suite's name as its runs recorded it (`--suite`), else its folder's: a published copy's
        records sit in `runs/`, and a suite run with `--out` records the default name."""
        named = {run.config["run"].get("suite") for run in self.runs}
        return named.pop() if len(named) == 1 and not named & {None, RunConfig.suite} else self.suite.name

    def tables(self) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
        """Name -> (numbers, readable form)."""
        totals = self.ledger[self.ledger["stage"] == "total"]
        return {"comparison": (self.comparison, tables.display(self.comparison, self.baselines)),
                "cost_ledger": (self.ledger, _rounded(self.ledger)),
                "cost_totals": (totals, _rounded(totals)),
                "cost_per_gain": (self.cost_per_gain, _rounded(self.cost_per_gain)),
                "cost_to_target": (self.cost_to_target, _rounded(self.cost_to_target)),
                "curve_points": (self.curve_points, _rounded(self.curve_points)),
                "influence": (self.influence, _rounded(self.influence)),
                "credit": (self.credit, _rounded(self.credit)),
                "search_models": (self.search_models, _rounded(self.search_models))}


def suite_dir(suite: str) -> Path:
    """A suite by name (runs/<name>) or by path."""
    path = Path(suite)
    return path if path.is_dir() else Path("runs") / suite


def build(suite: str, baselines=tables.BASELINES, target: str | None = None,
          allow_unfinished: bool = False) -> Report:
    """Every table of a suite. `target`: the policy whose score the cost-to-target view asks for
    (default: optima_full where the suite has it)."""
    root = suite_dir(suite)
    found = load_suite(root, allow_unfinished)
    check_comparable(found)
    comparison = tables.comparison(found, baselines)
    credit = credit_table(found)
    comparison["method"] = method_notes(found, comparison, credit)
    book = costs.ledger(found)
    points = costs.curve_points(found, book)
    policies = list(dict.fromkeys(p for p in comparison["policy"] if not p.startswith(tables.REFERENCE)))
    absent = [b for b in baselines if b not in policies]
    if absent and tuple(baselines) != tables.BASELINES:
        raise HarnessError(f"--baselines {absent[0]}: not a policy of {root} ({', '.join(policies)})")
    if absent:
        log.warning("no difference against %s: not a policy of %s", ", ".join(absent), root)
    trained = list(dict.fromkeys(points["policy"]))
    if target is not None and target not in trained:
        raise HarnessError(f"--target {target}: not a trained policy of {root} ({', '.join(trained)})")
    target = target or ("optima_full" if "optima_full" in trained else None)
    return Report(root, found, comparison, book, costs.cost_per_gain(comparison, book, baselines), points,
                  costs.cost_to_target(points, target), target or "-", tuple(baselines),
                  tables.influence_resolution(found), credit, model_table(found))


# Every report writes its comparison here: a folder holding it is an earlier report, fine to replace.
REPORT_MARK = "comparison.json"


def output_dir(report: Report, out: Path) -> Path:
    """`out`, refused where replacing it would delete the suite's records (the suite itself, a folder
    above it, one of its runs or its shared stages) or anything but an earlier report: a folder that
    exists must be empty or hold a report's `REPORT_MARK`."""
    suite, target = report.suite.resolve(), Path(out).resolve()
    inside = target.is_relative_to(suite) and target != suite
    first = suite / target.relative_to(suite).parts[0] if inside else None
    if not inside and suite.is_relative_to(target) or first is not None and (
            first.name == "shared" or (first / "run_spec.json").exists()):
        raise HarnessError(f"{out}: writing there would replace the suite's own records ({report.suite}); "
                           "choose another directory")
    if target.is_dir() and any(target.iterdir()) and not (target / REPORT_MARK).is_file():
        raise HarnessError(f"{out}: the folder holds files that are not a report's (no {REPORT_MARK}), and "
                           "writing there replaces it whole; choose an empty or new directory")
    return Path(out)


def write_into(report: Report, directory: Path) -> list[str]:
    """Every table in four formats and every plot, into `directory`; the names written."""
    names = []
    for name, (numbers, shown) in report.tables().items():
        names += [Path(p).name for p in tables.write_formats(numbers, shown, directory / name).values()]
    metric = dict(zip(report.comparison["task"], report.comparison["metric"]))
    pictures = plots.metric_against_cost(report.curve_points, metric, directory) + plots.influence_panels(
        report.runs, directory)
    report.plots = [p.name for p in pictures]
    return names + report.plots


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.round(4).astype(object).where(frame.notna(), "-")


def copy_records(report: Report, dest: Path) -> None:
    """The suite's run records without weights or trainer checkpoints (what reports read) into `dest`,
    this machine's folders written so that they name none of it (`_portable_prefixes`)."""
    def skip(folder, names):
        return [n for n in names if n in ("model", "trainer") or n.startswith(".") or n.endswith(".safetensors")]

    shutil.copytree(report.suite, dest, ignore=skip)
    prefixes = _portable_prefixes(report)
    for path in dest.rglob("*.json*"):
        text = original = path.read_text(encoding="utf-8")
        for prefix, written in prefixes:
            text = text.replace(json.dumps(prefix, ensure_ascii=False)[1:-1], written)  # as records write it
        if text != original:
            path.write_text(text, encoding="utf-8")


def _portable_prefixes(report: Report) -> list[tuple[str, str]]:
    """(this machine's folder, what a published record says instead), longest first: the folder
    that held the suite when it ran, dropped (a report finds a run's stages under wherever its suite
    is now), the harness's cache as `$HARNESS_CACHE/`, and the checkout the harness runs from, dropped."""
    suites = {str(Path(run.spec["shared_stages"]).parent.parent.parent) for run in report.runs}
    folders = {**{f"{s}/": "" for s in suites if Path(s).is_absolute()},
               f"{cache_root()}/": "$HARNESS_CACHE/", f"{CHECKOUT}/": ""}
    return sorted(folders.items(), key=lambda item: -len(item[0]))
