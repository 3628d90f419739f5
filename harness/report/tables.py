"""The comparison table: task x policy, with paired differences against the baselines.

Few seeds are affordable, so a difference between two selectors is measured on the same test items:
per seed, the selector's score on an item minus the baseline's on that item; each item's differences
averaged over the seeds (the items repeat in every seed, so they, not item x seed, are the
independent draws). With fewer than three seeds the interval is a Student-t one on the mean over
items, given the seeds (how much another seed would move it is not estimated, and the table says
so); from three seeds on, a two-level bootstrap over seeds and items. Each difference carries its
minimum detectable difference (MDD, `power`), and the readable table says where the interval covers
zero, where nothing differs or nothing varies, and where DITS influence was too coarse to rank by.
A row's ± is the standard error over test items of its seed-averaged item scores, on every row alike;
how far its seeds' means lie apart is a column of its own (an SD from two seeds is rough, and one
evaluation that every seed shares, the initial policy's, has none).
"""

from __future__ import annotations

import math
import statistics

import pandas as pd
from scipy import stats as scistats

from harness.errors import HarnessError
from harness.report import power
from harness.report.power import CONFIDENCE, TIE
from harness.report.records import Run

# The policies every difference is against unless --baselines names others; the one declaration.
BASELINES = ("optima_full", "random", "qvalue")
FIXED_POLICIES = ("initial", "sft")  # shared by every run of a seed
# Rows in the paper's ablation order (the baselines are in it); other policies (DITS variants, new
# selectors) after, by name.
ORDER = (*FIXED_POLICIES, *BASELINES)
REFERENCE = "reference: "  # a reference row's policy: the name after it (no item scores: never a baseline)
# versus() key -> comparison column suffix (`vs_<baseline><suffix>`).
INFLUENCE_COLUMNS = ["task", "policy", "budget", "seed", "iteration", "units", "validation_size", "distinct_values",
                     "tied_units", "changed_answers_median", "split_half_spearman", "eta", "path", "reused",
                     "degenerate"]
VERSUS_COLUMNS = {"diff": "", "low": "_low", "high": "_high", "n": "_n", "seeds": "_seeds", "sd": "_sd", "mdd": "_mdd"}


def _order(policy: str) -> tuple:
    return (ORDER.index(policy), "") if policy in ORDER else (len(ORDER), policy)


def paired_difference(diffs: list[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of per-item differences with its t interval; n is the number of items."""
    n = len(diffs)
    if n == 0:
        return {"diff": None, "low": None, "high": None, "n": 0}
    mean = statistics.fmean(diffs)
    if n == 1:
        return {"diff": mean, "low": None, "high": None, "n": 1}
    half = float(scistats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n))
    return {"diff": mean, "low": mean - half, "high": mean + half, "n": n}


def versus(mine: list[dict[str, float]], theirs: list[dict[str, float]], confidence: float = CONFIDENCE) -> dict:
    """A policy against a baseline, `mine[k]` and `theirs[k]` their item scores in the same seed, on
    the items both scored in every seed: the mean paired difference, its interval (t over items
    below `power.MIN_SEEDS_FOR_SEED_VARIANCE` seeds, else the two-level bootstrap), the number of
    items and seeds, the SD of the seed-averaged differences and the MDD."""
    items = sorted(set.intersection(*(a.keys() & b.keys() for a, b in zip(mine, theirs)))) if mine else []
    per_seed = [[a[i] - b[i] for i in items] for a, b in zip(mine, theirs)]
    diffs = [statistics.fmean(d) for d in zip(*per_seed)]
    baseline = [statistics.fmean(b[i] for b in theirs) for i in items]
    out = paired_difference(diffs, confidence) | {
        "seeds": len(mine), "sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
        "mdd": power.paired_mdd(diffs, baseline)}
    if items and len(mine) >= power.MIN_SEEDS_FOR_SEED_VARIANCE:
        out["low"], out["high"], se = power.two_level_bootstrap(per_seed, confidence)
        if not power.all_zero(diffs):  # else the baseline's noise, as below three seeds
            out["mdd"] = power.mdd(se, 1)
    return out


def _policies(runs: list[Run]) -> dict[str, dict[int, tuple[Run, str]]]:
    """Policy name -> seed -> (the run holding it, which of its evaluations)."""
    out: dict[str, dict[int, tuple[Run, str]]] = {}
    for run in runs:
        for policy in FIXED_POLICIES:
            out.setdefault(policy, {}).setdefault(run.seed, (run, policy))
        seeds = out.setdefault(run.label, {})
        if run.seed in seeds:
            raise HarnessError(f"two runs of {run.label} with seed {run.seed} in one suite: {seeds[run.seed][0].path} "
                               f"and {run.path}")
        seeds[run.seed] = (run, "dpo")
    return out


def influence_fallback(runs: list[Run]) -> str | None:
    """What a policy's degenerate influence fell back to (None where every selection resolved its
    units), with how often where only some of its selections did."""
    found = [f for run in runs for f in run.influence_fallbacks()]
    hits = [f for f in found if f]
    if not hits:
        return None
    return hits[0] if len(hits) == len(found) else f"{hits[0]} in {len(hits)} of {len(found)} selections"


def influence_resolution(runs: list[Run]) -> pd.DataFrame:
    """Per influence selection (run, iteration): its units, distinct values, tied units, the
    validation answers a unit's step changed, its split-half reliability and what it fell back to."""
    rows = []
    for run in runs:
        if not run.traits["influence"]:
            continue
        for it in range(run.iterations):
            facts = run.selection_facts(it)
            res = facts["resolution"]
            rows.append({"task": run.task, "policy": run.label, "budget": run.budget or "-", "seed": run.seed,
                         "iteration": it, "units": res["units"], "validation_size": res["validation_size"],
                         "distinct_values": res["distinct_values"], "tied_units": res["tied_units"],
                         "changed_answers_median": res.get("changed_answers_median"),
                         "split_half_spearman": res.get("split_half_spearman"), "eta": facts["eta"],
                         "path": facts.get("influence_path", "-"), "reused": facts["reused_estimate"],
                         "degenerate": res.get("degenerate") or "-"})
    return pd.DataFrame(rows, columns=INFLUENCE_COLUMNS)


def interval_note(kinds: dict[str, str]) -> str:
    """The row's interval kind, per baseline only where the baselines' paired seeds differ."""
    if len(set(kinds.values())) == 1:
        return next(iter(kinds.values()))
    return "; ".join(f"vs {base}: {kind}" for base, kind in kinds.items()) or "-"


def comparison(runs: list[Run], baselines=BASELINES) -> pd.DataFrame:
    """One row per task and policy (initial, SFT-only, then each selector), numeric columns but for
    the interval kind and the influence fallback. Budget-sweep runs are left out: they are the cost
    curves' points."""
    rows = []
    for task in dict.fromkeys(r.task for r in runs):
        mine = [r for r in runs if r.task == task and r.budget is None]
        policies = _policies(mine)
        items = {name: {seed: run.item_scores(which) for seed, (run, which) in seeds.items()}
                 for name, seeds in policies.items()}
        for name in sorted(policies, key=_order):
            seeds = policies[name]
            scored = [run.score(which) for run, which in seeds.values()]
            means = [s["mean"] for s in scored]
            evaluations = distinct_evaluations(list(items[name].values()))
            row = {"task": task, "policy": name, "metric": scored[0]["metric"], "mean": statistics.fmean(means),
                   "spread": item_stderr(list(items[name].values())), "spread_kind": "stderr over items",
                   "seed_sd": statistics.stdev(means) if evaluations > 1 else None, "evaluations": evaluations,
                   "seeds": len(means),
                   "questions": scored[0]["n"],
                   "no_signal": power.constant([v for by_item in items[name].values() for v in by_item.values()]),
                   "tokens_per_dialogue": statistics.fmean(s["tokens_per_dialogue"] for s in scored),
                   "pairs_trained": None if name in FIXED_POLICIES else statistics.fmean(
                       sum(t["dpo_pairs"] for t in run.results["training"].values()) for run, _ in seeds.values()),
                   "influence_degenerate": None if name in FIXED_POLICIES else influence_fallback(
                       [run for run, _ in seeds.values()])}
            kinds = {}
            for base in baselines:
                if base not in policies or base == name:
                    row |= no_versus(base)
                    continue
                shared = sorted(items[name].keys() & items[base].keys())
                d = versus([items[name][s] for s in shared], [items[base][s] for s in shared])
                kinds[base] = power.interval_kind(d["seeds"])
                row |= {f"vs_{base}{suffix}": d[key] for key, suffix in VERSUS_COLUMNS.items()}
            row["interval"] = interval_note(kinds)
            rows.append(row)
        rows += [row | {k: v for base in baselines for k, v in no_versus(base).items()}
                 for row in reference_rows(task, policies, items.get("initial", {}))]
    return pd.DataFrame(rows)


def item_stderr(evaluations: list[dict[str, float]]) -> float | None:
    """The standard error over items of the seed-averaged item scores (items every seed scored)."""
    common = set.intersection(*(set(e) for e in evaluations))
    averaged = [statistics.fmean(e[i] for e in evaluations) for i in sorted(common)]
    return statistics.stdev(averaged) / math.sqrt(len(averaged)) if len(averaged) > 1 else None


def distinct_evaluations(evaluations: list[dict[str, float]]) -> int:
    """How many of the seeds' evaluations differ. Seeds that share one (the initial policy's, greedy
    on contexts the seed does not change) count once: their SD over seeds of 0 measures nothing."""
    return len({tuple(sorted(e.items())) for e in evaluations})


def no_versus(base: str) -> dict:
    """A row's columns against `base` where it has no comparison with it (itself, a reference row)."""
    return {f"vs_{base}{suffix}": None for suffix in VERSUS_COLUMNS.values()} | {f"vs_{base}_n": 0,
                                                                              f"vs_{base}_seeds": 0}


def reference_rows(task: str, policies: dict, initial_items: dict[int, dict[str, float]]) -> list[dict]:
    """The initial evaluation's reference rows (`harness.references`: chance, most frequent option,
    one agent alone, the whole story), averaged over the seeds: the floor and the ceiling.
    `initial_items`: seed -> the initial evaluation's item scores, as the comparison read them."""
    initial = [run.score("initial") for run, _ in policies.get("initial", {}).values()]
    evaluations = distinct_evaluations(list(initial_items.values()))
    names = dict.fromkeys(name for s in initial for name in s.get("references", {}))
    return [{"task": task, "policy": f"{REFERENCE}{name}", "metric": initial[0]["metric"],
             "mean": statistics.fmean(s["references"][name] for s in initial if name in s.get("references", {})),
             "spread": None, "spread_kind": "reference", "seed_sd": None, "evaluations": evaluations,
             "seeds": len(initial), "questions": initial[0]["n"],
             "no_signal": False, "tokens_per_dialogue": None, "pairs_trained": None, "influence_degenerate": None,
             "interval": "-"} for name in names]


def display(table: pd.DataFrame, baselines=BASELINES) -> pd.DataFrame:
    """The comparison as people read it: mean ± spread, differences with their interval, whether it
    resolves the difference and the MDD; what the intervals cover; degenerate influence."""
    out = pd.DataFrame({
        "task": table["task"], "policy": table["policy"], "metric": table["metric"],
        "score": [_score(m, s, flat) for m, s, flat in zip(table["mean"], table["spread"], table["no_signal"])],
        "sd over seeds": [seed_sd_text(*cells) for cells in zip(table["seed_sd"], table["evaluations"], table["seeds"])],
        "seeds": table["seeds"], "questions": table["questions"]})
    seeds = dict(zip(zip(table["task"], table["policy"]), table["seeds"]))
    for base in baselines:
        # a pair compared on fewer seeds than either row shows says which: the scores are not its means
        fewer = [0 < paired < max(mine, seeds.get((task, base), 0)) for task, paired, mine in
                 zip(table["task"], table[f"vs_{base}_seeds"], table["seeds"])]
        out[f"Δ vs {base} [{CONFIDENCE:.0%} CI]"] = [
            difference_text(*cells) + (f" (on the {paired:.0f} seed(s) both ran)" if few else "")
            for few, paired, *cells in zip(fewer, table[f"vs_{base}_seeds"],
                                           *(table[f"vs_{base}{s}"] for s in ("", "_low", "_high", "_sd", "_mdd")))]
    out["interval"] = table["interval"]
    out["tokens/dialogue"] = ["-" if _missing(t) else f"{t:.1f}" for t in table["tokens_per_dialogue"]]
    out["pairs trained"] = ["-" if pd.isna(p) else f"{p:.0f}" for p in table["pairs_trained"]]
    # how each policy was made, where the report's builder says (`harness.report.credit.method_notes`)
    methods = table["method"] if "method" in table else [None] * len(table)
    out["notes"] = [notes(f, m) for f, m in zip(table["influence_degenerate"], methods)]
    return out


def notes(fallback, method) -> str:
    """A row's notes: how its policy was made where that is not Optima's search and a selector alone
    (`harness.report.credit.method_note`), and a degenerate influence."""
    said = [] if _missing(method) else [method]
    said += [] if _missing(fallback) else [f"influence degenerate: {fallback}"]
    return "; ".join(said) or "-"


def _missing(value) -> bool:
    return value is None or pd.isna(value)


def seed_sd_text(sd, evaluations, seeds) -> str:
    if seeds == 1:
        return "-"
    return "one evaluation" if evaluations == 1 else f"{sd:.4f}"


def _score(mean, spread, no_signal) -> str:
    # A spread of zero reads as a precise estimate; every item scoring alike is the opposite.
    if no_signal:
        return f"{mean:.4f} (no signal: every item scores {mean:.4f})"
    if _missing(spread):  # a reference row
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {spread:.4f}"


def difference_text(d, lo, hi, sd, mdd) -> str:
    """One difference as read: never an interval of width 0, which would claim a certainty that
    only means nothing varied."""
    if _missing(d):
        return "-"
    if abs(d) <= TIE and (_missing(sd) or sd <= TIE):  # every paired difference is zero
        if _missing(mdd):
            return "no difference observed (one item: no MDD)"
        if mdd <= TIE:
            return "no difference observed (no signal in either)"
        return f"no difference observed (MDD {mdd:.4f})"
    if _missing(lo):
        return f"{d:+.4f} (one item: no interval)"
    if hi - lo <= TIE:
        return f"{d:+.4f} on every item (no spread: no interval)"
    resolved = "" if lo > 0 or hi < 0 else " not resolved"
    detectable = "" if _missing(mdd) else f", MDD {mdd:.4f}"  # one item over several seeds: no MDD
    return f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]{resolved}{detectable}"


def write_formats(table: pd.DataFrame, shown: pd.DataFrame, stem) -> dict[str, str]:
    """`stem`.md, .csv, .json and .tex: the numbers in CSV and JSON, the readable form in Markdown and LaTeX."""
    paths = {"md": f"{stem}.md", "csv": f"{stem}.csv", "json": f"{stem}.json", "tex": f"{stem}.tex"}
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(shown.to_markdown(index=False) + "\n")
    table.to_csv(paths["csv"], index=False)
    table.to_json(paths["json"], orient="records", indent=2)
    with open(paths["tex"], "w", encoding="utf-8") as f:
        # escaped (`_`, `%` and `&` break LaTeX), then the two symbols as math
        f.write(shown.to_latex(index=False, escape=True).replace("±", r"$\pm$").replace("Δ", r"$\Delta$"))
    return paths
