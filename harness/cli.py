"""The `harness` command line: the self-training experiment, its stages one at a time, reports and data.

Commands that run take `--config FILE` (or a preset name) and `key=value` overrides; bad input
answers one line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

from tabulate import tabulate

from harness import config as cfgmod
from harness import runs
from harness.config import EvalConfig, SelectConfig, SynthConfig
from harness.errors import HarnessError
from harness.tasks.base import SPLITS

LOG_LEVELS = ("warning", "info", "debug")
# Their info logs and deprecation warnings bury the harness's one-line messages.
NOISY_LIBRARIES = ("transformers", "trl", "peft", "datasets")


def _logging(level: str) -> None:
    """`level` for the project's own loggers; below debug, the noisy libraries show errors only."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("harness",):
        logging.getLogger(name).setLevel(level.upper())
    if level != "debug":
        _quiet_libraries()


def _quiet_libraries() -> None:
    # Only the commands that need them import these libraries. transformers and datasets set their
    # loggers' level from these variables when first imported (a user's own setting wins); the levels
    # set below hold for trl and peft, and for a library already imported.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{name}(\.|$)")
    # transformers' deprecations name the caller's frame, which is torch's module call
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.nn\.modules\.module$")


def _offline(online: bool) -> None:
    # The hub is used only when asked for: offline machines fail fast instead of waiting on DNS.
    if not online:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")


def cmd_eval(args) -> int:
    from harness.evaluation import evaluate, results_table

    cfg = cfgmod.build(EvalConfig, args.config, args.overrides, task=args.task, model=args.model,
                       split=args.split, limit=args.limit, seed=args.seed, out=args.out,
                       data_dir=args.data_dir, online=args.online or None, cache=_cache(args))
    _offline(cfg.online)
    result = evaluate(cfg, resume=args.resume)
    print(results_table(result))
    print(f"run record: {result.run_dir}")
    return 0


def cmd_synth(args) -> int:
    from harness.synth.synthesis import summary_table, synthesize

    cfg = cfgmod.build(SynthConfig, args.config, args.overrides, task=args.task, model=args.model,
                       questions=args.questions, seed=args.seed, out=args.out, data_dir=args.data_dir,
                       online=args.online or None, cache=_cache(args), method=args.method, models=args.models,
                       credit=args.credit, coach=args.coach)
    _offline(cfg.online)
    result = synthesize(cfg, resume=args.resume)
    print(summary_table(result))
    print(f"pairs: {result.run_dir / 'pairs.jsonl'}")
    return 0


def cmd_select(args) -> int:
    from harness.selection import run_select

    eta = {"eta_auto": True} if args.eta == "auto" else {"eta": args.eta}
    cfg = cfgmod.build(SelectConfig, args.config, args.overrides, selector=args.selector, pairs=args.pairs,
                       alpha=args.alpha, gamma=args.gamma, seed=args.seed, out=args.out, cache=_cache(args),
                       credit=args.credit, coach=args.coach, **eta)
    out, selected, rows = run_select(cfg)
    top = sorted((r for r in rows if r["selected"]), key=lambda r: r["rank"])[:10]
    print(tabulate([[r["rank"], r["pair_id"], f"{r['Q']:.3f}", "-" if r["I"] is None else f"{r['I']:.4f}",
                     f"{r['H']:.4f}"] for r in top], ["rank", "pair", "Q", "I", "H"], tablefmt="github"))
    print(f"{len(selected)} of {len(rows)} pairs selected by {cfg.selector}: {out / 'selected.jsonl'}")
    return 0


def _cache(args) -> str | None:
    """The response cache's flags as a value of `cache`: "none" (off) overrides a preset's directory."""
    return "none" if args.no_cache else args.cache


def _search_overrides(args) -> list[str]:
    """`harness run` and `suite`'s search and credit flags as unprefixed overrides, which reach the synth
    and select sections (the run section has no such keys); the command line's own overrides come later
    and win."""
    flags = {"method": args.method, "models": args.models, "credit": args.credit, "coach": args.coach}
    return [f"{k}={v}" for k, v in flags.items() if v is not None]


def _run_flags(args) -> dict:
    return {"task": args.task, "model": args.model, "seed": getattr(args, "seed", None), "iterations": args.iterations,
            "suite": args.suite, "data_dir": args.data_dir, "online": args.online or None, "out": args.out,
            "cache": _cache(args)}


def cmd_run(args) -> int:
    from harness.experiment.executor import execute
    from harness.experiment.plan import make_plan

    plan = make_plan(args.config, [*_search_overrides(args), *args.overrides], selector=args.selector,
                     gamma=args.gamma, **_run_flags(args))
    _offline(plan.run.online)
    if args.dry_run:
        from harness.experiment.pools import check_pools

        pools = check_pools(plan)
        print(dry_run_table(plan))
        print("pools: " + ", ".join(f"{k} {len(v)}" for k, v in pools.items() if k != "source"))
        return 0
    results = execute(plan, resume=args.resume, progress=lambda line: print(line, file=sys.stderr))
    print(run_table(results))
    print(f"run record: {plan.run_dir}")
    return 0


def dry_run_table(plan) -> str:
    from harness.records import manifest

    rows = [[s.label, "shared" if s.shared else "run", "to do" if manifest.problem(s.path, hashes=False) else "done",
             s.does] for s in plan.stages]
    return (f"{plan.run_id}\nrun directory: {plan.run_dir}\nshared stages: {plan.shared_dir}\n"
            f"initial evaluation: {plan.initial_dir}\n"
            + tabulate(rows, ["stage", "owner", "state", "work"], tablefmt="github"))


def run_table(results: dict) -> str:
    from harness.report.tables import difference_text

    def versus(d):
        return "-" if d is None else difference_text(*(d[k] for k in ("diff", "low", "high", "sd", "mdd")))

    rows = [[r["policy"], "-" if r["iteration"] is None else r["iteration"], r["metric"], f"{r['mean']:.4f}",
             f"{r['stderr']:.4f}", r["n"], versus(r.get("vs_initial")), f"{r['tokens_per_dialogue']:.1f}"]
            for r in results["scores"]]
    table = tabulate(rows, ["policy", "iteration", "metric", "value", "± stderr", "n",
                            "Δ vs initial [95% CI, t over items]", "tokens/dialogue"], tablefmt="github")
    walls = " ".join(f"{k}={v:.0f}s" for k, v in results["wall_seconds"].items())
    return f"{table}\nwall per stage (this or an earlier run of the suite): {walls}"


def cmd_suite(args) -> int:
    from harness.experiment.plan import split_selectors
    from harness.experiment.suite import run_suite, suite_table

    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    flags = _run_flags(args) | {"seed": None}
    table = run_suite(args.config, [*_search_overrides(args), *args.overrides], split_selectors(args.selectors),
                      seeds, flags, args.budgets,
                      progress=lambda line: print(line, file=sys.stderr))
    print(suite_table(table))
    return 0


def cmd_analyze_influence(args) -> int:
    from pathlib import Path

    from harness.dits.analyze import analyze, write
    from harness.selection import read_pairs

    cfg = cfgmod.build(SelectConfig, args.config, args.overrides, pairs=args.pairs, seed=args.seed)
    _offline(cfg.online)
    result = analyze(read_pairs(Path(args.pairs)), cfg, args.units, args.steps, args.eval_split,
                     args.eval_size or cfg.influence.validation_size)
    out = Path(args.out) if args.out else Path(args.pairs).parent / "analyze_influence"
    write(result, out)
    print(tabulate([[name, "-" if rho is None else f"{rho:+.3f}"] for name, rho in result["spearman"].items()],
                   ["estimate", f"Spearman with the true gain ({result['units']} units)"], tablefmt="github"))
    audit = result["screen_audit"]

    def rho(value):
        return "-" if value is None else f"{value:+.3f}"

    print(f"screen against metric influence: Spearman {rho(audit['spearman_with_metric_influence'])}, "
          f"top-{audit['alpha']:g} overlap {audit['top_alpha_overlap']:.2f}; metric influence's split-half "
          f"{rho(audit['metric_influence_split_half'])}; {audit['screen_seconds']:.0f} s against "
          f"{audit['metric_influence_seconds']:.0f} s")
    print(f"analysis: {out}")
    return 0


def _report(args):
    from harness.report.build import build
    from harness.report.tables import BASELINES

    baselines = BASELINES if args.baselines is None else tuple(dict.fromkeys(b for b in args.baselines.split(",") if b))
    return build(args.suite, baselines, args.target, getattr(args, "allow_unfinished", False))


def cmd_report(args) -> int:
    from pathlib import Path

    from harness.report.build import output_dir, write_into

    report = _report(args)
    out = output_dir(report, Path(args.out) if args.out else report.suite / "report")
    with runs.run_directory(out) as tmp:
        names = write_into(report, tmp)
    shown = report.tables()
    print(shown["comparison"][1].to_markdown(index=False))
    print("\ncost per gain (extra training cost over the baseline, per metric point x100)")
    print(shown["cost_per_gain"][1].to_markdown(index=False) if len(report.cost_per_gain)
          else "(no trained baseline paired with a trained policy)")
    print(f"\n{len(names)} files: {out}")
    return 0


def cmd_leaderboard(args) -> int:
    from pathlib import Path

    from harness.report.build import output_dir
    from harness.report.leaderboard import publish

    report = _report(args)
    out = output_dir(report, Path(args.publish) / report.name if args.publish else report.suite / "leaderboard")
    names = publish(report, out, with_records=bool(args.publish))
    print(report.tables()["comparison"][1].to_markdown(index=False))
    print(f"\nleaderboard: {out / 'leaderboard.html'} ({len(names)} files)")
    return 0


def cmd_check(args) -> int:
    from pathlib import Path

    from harness.report.check import bless, check, read_reference

    report = _report(args)
    against = Path(args.against)
    if args.bless:
        reference = bless(report.comparison, report.name, against, args.tolerance, args.keep_lowest)
        print(f"blessed {len(reference['scores'])} scores of {report.suite} into {against}")
        return 0
    result = check(report.comparison, read_reference(against))
    print(result.to_markdown(index=False, floatfmt=".4f"))
    failed = result[result["status"] != "pass"]
    if len(failed):
        print(f"check failed: {len(failed)} of {len(result)} scores below the reference {against}", file=sys.stderr)
        return 1
    print(f"check passed: {len(result)} scores at or above the reference {against}")
    return 0


def cmd_train(args) -> int:
    from pathlib import Path

    from harness.config import RunConfig
    from harness.runs import read_jsonl
    from harness.train.launch import train_stage

    cfg = cfgmod.build(RunConfig, args.config, args.overrides, task=args.task, model=args.model, seed=args.seed)
    _offline(cfg.online)
    rows = [row for _, row in read_jsonl(Path(args.data))]
    out = Path(args.out)
    stats = train_stage(args.stage, cfg.model, rows, cfg, out)
    print(tabulate([[k, v] for k, v in stats.items() if k != "log"], ["", args.stage], tablefmt="github"))
    print(f"policy: {out / 'model'}")
    return 0


def cmd_bench(args) -> int:
    from pathlib import Path

    from harness.bench.record import table
    from harness.bench.run import chosen_parts, run_bench

    parts = chosen_parts(_names(args.only), _names(args.skip))
    device = args.device or "cpu"
    # bf16 is what a GPU decodes in; a CPU's matmuls are fastest in fp32
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    _offline(False)

    def written(document):
        out = Path(args.out.format(machine=document["machine"]["name"]))
        out.parent.mkdir(parents=True, exist_ok=True)
        runs.write_json(out, document)
        return out

    doc = run_bench(args.model, device, dtype, parts, quick=args.quick, random_init=args.random_init,
                    tokenizer=args.tokenizer, task=args.task, data_dir=_data_dir(args), seed=args.seed,
                    progress=lambda line: print(line, file=sys.stderr), written=written)
    out = written(doc)
    print(f"{doc['machine']['name']}: {doc['model']['name']} ({doc['model']['matmul_params']:,} matmul params, "
          f"{dtype}, {'random init' if args.random_init else 'its weights'}) on {device}, {doc['sizes']['name']} sizes")
    print(table(doc))
    print(f"bench: {out}")
    failed = [name for name, result in doc["parts"].items() if "error" in result]
    if failed:
        print(f"bench: {len(failed)} part(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _names(value: str | None) -> list[str] | None:
    return [n for n in value.split(",") if n] if value else None


def _data_dir(args) -> str | None:
    return args.data_dir or os.environ.get("HARNESS_DATA_DIR") or None


def cmd_data_ls(args) -> int:
    from pathlib import Path

    from harness.data.inventory import inventory

    data_dir = _data_dir(args)
    print(f"data directory: {data_dir}" if data_dir else "no data directory (--data-dir or HARNESS_DATA_DIR): "
          "runs read the hub with --online, else the project-written samples in harness/tasks/fixtures")
    records = inventory(Path(data_dir) if data_dir else None)
    print(tabulate([[r["task"], r["split"], "-" if r["rows"] is None else r["rows"], r["source"], r["problem"]]
                    for r in records], ["task", "split", "rows", "source", "problem"], tablefmt="github"))
    bad = {r["source"]: r["problem"] for r in records if r["problem"]}
    if bad:
        raise HarnessError(f"schema problems in {len(bad)} file(s): "
                           + "; ".join(f"{source}:{problem}" for source, problem in sorted(bad.items())))
    return 0


def cmd_data_fetch(args) -> int:
    from harness.data.fetch import fetch, file_source

    data_dir = _data_dir(args)
    if not data_dir:
        raise HarnessError("fetch needs --data-dir DIR (or HARNESS_DATA_DIR) to write to")
    files = dict(_pair(item, "--files") for item in args.files or [])
    written = fetch(args.task, data_dir, args.splits, args.limit, file_source(files) if files else None)
    print(tabulate([[split, n, path] for split, (path, n) in written.items()], ["split", "rows", "written to"],
                   tablefmt="github"))
    return 0


def _pair(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key or not value:
        raise HarnessError(f"{flag} {item!r}: expected NAME=VALUE")
    return key, value


def cmd_data_build_cbt(args) -> int:
    from harness.data.build_cbt import BuildCBTConfig, build_cbt

    cfg = cfgmod.build(BuildCBTConfig, None, None, books=args.books, out=args.out, type=args.type,
                       per_book=args.per_book, seed=args.seed, spacy_model=args.spacy_model)
    started = time.time()
    manifest = build_cbt(cfg)
    counts = manifest["counts"]
    print(tabulate([[split, n] for split, n in counts.items()], ["split", f"CBT-{cfg.type} items"],
                   tablefmt="github"))
    print(f"{sum(counts.values())} items from {sum(b['split'] is not None for b in manifest['books'])} books "
          f"in {time.time() - started:.0f} s: {os.path.join(cfg.out, 'cbt')} (manifest.json names the books)")
    return 0


def cmd_data_build_web(args) -> int:
    from harness.web.generate import build_web_packs

    data_dir = _data_dir(args)
    if not data_dir:
        raise HarnessError("build-web needs --data-dir DIR (or HARNESS_DATA_DIR): the HotpotQA and 2WikiMultihopQA "
                           "rows it builds from, and where the packs go (DIR/webwalker/packs/)")
    started = time.time()
    summary = build_web_packs(data_dir, args.out)
    print(tabulate([[s["pack"], s["rows"], s["questions"], ", ".join(f"{n} {why}" for why, n in s["dropped"].items()),
                     s["pages"]] for s in summary], ["pack", "rows", "questions", "dropped", "pages"], tablefmt="github"))
    print(f"{len(summary)} packs, {sum(s['questions'] for s in summary)} questions in {time.time() - started:.0f} s: "
          f"{os.path.join(args.out or data_dir, 'webwalker', 'packs')}")
    return 0


def cmd_data_snapshot_web(args) -> int:
    from pathlib import Path

    from harness.web import snapshot, splits
    from harness.web.browser import LiveBrowser
    from harness.web.pack import Root

    root = Root.of(args.root)
    rows = snapshot.read_rows(args.questions, root.url) if args.questions else []
    data_dir = _data_dir(args)
    if not args.out and not data_dir:
        raise HarnessError("snapshot-web needs --out DIR, or --data-dir DIR (the pack goes to DIR/webwalker/packs/)")
    out = Path(args.out) if args.out else splits.packs_dir(data_dir) / root.host
    stats = snapshot.snapshot(LiveBrowser([root.url]), root.url, out, rows, args.max_pages, name=root.host,
                              domain=args.domain, lang=args.lang)
    print(tabulate([[k, v] for k, v in stats.items() if k != "stale_reasons"], tablefmt="github"))
    for reason in stats["stale_reasons"]:
        print(f"stale: {reason}")
    print(f"snapshot of {root.url}: {out}")
    return 0


def cmd_data_script_web(args) -> int:
    from pathlib import Path

    from harness.mas import web
    from harness.mas.roster import roster_for
    from harness.tasks import get_task
    from harness.train.sft_data import dialogue_examples

    roster = roster_for("web")
    questions = get_task("webwalker").load(args.split, _data_dir(args), args.limit)
    rows = [row for q in questions for row in dialogue_examples(web.scripted(q, roster), reward=1.0)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with runs.atomic_file(out) as tmp:
        runs.write_jsonl(tmp, rows)
    print(f"{len(rows)} SFT examples from {len(questions)} scripted {args.split} episodes: {out} "
          f"(cold start: harness train --stage sft --task webwalker --data {out} --out DIR)")
    return 0


def cmd_ls(args) -> int:
    if args.what == "tasks":
        from harness.tasks import TASKS

        rows = []
        for name in TASKS:
            t = TASKS.get(name)
            rows.append([name, t.dataset or "data directory only", t.sizes, t.setting, t.metric, t.licence])
        print(tabulate(rows, ["task", "source", "train / validation / test", "setting", "metric", "licence"],
                       tablefmt="github"))
    elif args.what == "models":
        from harness.models import MODELS

        print(tabulate([[n, MODELS.get(n).description] for n in MODELS], ["model", "description"],
                       tablefmt="github"))
        print("Any local Hugging Face model directory is accepted as --model too.")
    elif args.what == "presets":
        import yaml

        def flat(data, prefix=""):
            for key, value in data.items():
                yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}={value}"]

        rows = [[name, path.read_text().splitlines()[0].lstrip("# "), " ".join(flat(yaml.safe_load(path.read_text())))]
                for name, path in cfgmod.presets().items()]
        print(tabulate(rows, ["preset", "what", "settings"], tablefmt="github"))
    elif args.what == "backends":
        from harness.backends import BACKENDS

        rows = [[n, (BACKENDS.get(n).__doc__ or "").split("\n")[0], ", ".join(BACKENDS.get(n).settings)]
                for n in BACKENDS]
        print(tabulate(rows, ["backend", "what", "settings it takes"], tablefmt="github"))
    elif args.what == "selectors":
        from harness.selection import SELECTORS

        print(tabulate([[n, (SELECTORS.get(n).__doc__ or "").split("\n")[0]] for n in SELECTORS],
                       ["selector", "what it keeps"], tablefmt="github"))
    elif args.what == "rosters":
        from harness.mas.roster import ROSTERS

        rows = [[n, ", ".join(f"{a.name} ({a.role})" for a in ROSTERS.get(n).agents), ROSTERS.get(n).termination]
                for n in ROSTERS]
        print(tabulate(rows, ["roster", "agents (role), in turn order", "ends on"], tablefmt="github"))
    elif args.what == "cbt-types":
        from harness.data.cbt_items import WORD_TYPES

        rows = [[n, WORD_TYPES.get(n).description, " ".join(WORD_TYPES.get(n).tags)] for n in WORD_TYPES]
        print(tabulate(rows, ["type", "blanked words", "tags"], tablefmt="github"))
    elif args.what == "metrics":
        from harness.tasks.metrics import METRICS

        print("\n".join(METRICS.names()))
    return 0


def cmd_cost(args) -> int:
    import dataclasses

    from harness.report import cost_model
    from harness.selection import SELECTORS

    flags = [f"run.{k}={v}" for k, v in (("task", args.task), ("selector", args.selector)) if v]
    run, synth, select, evaluation = cost_model.configs(args.config, [*args.overrides, *flags])
    selector = SELECTORS.get(run.selector)
    test_size = run.test_questions if run.test_questions is not None else args.test_size
    shape = cost_model.shape_named(args.shape, args.shape_overrides)
    speed = dataclasses.replace(cost_model.THROUGHPUTS[args.throughput], **{
        k: v for k, v in (("decode", args.decode_tps), ("prefill", args.prefill_tps), ("train", args.train_tps)) if v})
    costs = cost_model.predict(run, synth, select, evaluation, shape, test_size, selector.influence,
                               selector.keeps_all, args.diverged_share, args.certified_share)
    print(f"{args.config} preset, task {run.task}, selector {run.selector}, {run.iterations} iteration(s), "
          f"{test_size} test questions; shape {args.shape}; tokens/s: decode {speed.decode:g}, prefill "
          f"{speed.prefill:g}, train {speed.train:g}")
    print(tabulate(cost_model.table(costs, speed), cost_model.TABLE_HEADERS, tablefmt="github",
                   floatfmt=[",.0f"] * 7 + [",.2f"], intfmt=","))
    return 0


def cmd_validate(args) -> int:
    if args.run:
        from pathlib import Path

        from harness.records.validate import validate_run

        state, problems = validate_run(Path(args.run))
        for line in problems:
            print(line)
        if problems:
            print(f"{args.run}: {len(problems)} problem(s)", file=sys.stderr)
            return 2
        where = f" at stage {state['stage']}" if state.get("stage") else ""
        print(f"{args.run}: records consistent ({state['state']}{where})")
        return 0
    from harness.experiment.plan import make_plan

    plan = make_plan(args.config, args.overrides)
    rows = [[section, k, v] for section, values in plan.configs().items()
            for k, v in sorted(cfgmod.flatten(values).items())]
    print(tabulate(rows, ["section", "key", "value"], tablefmt="github"))
    print(dry_run_table(plan))
    print("config is valid (every section, and trl's SFT and DPO configs)")
    return 0


TASK_HELP = "task name (harness ls tasks; default: the config's)"
SEED_HELP = "random seed (default: the config's)"
DATA_DIR_HELP = ("folder of TASK/SPLIT.jsonl files (default: $HARNESS_DATA_DIR, else the hub with --online, "
                 "else CBT's items built from the shipped books and the other tasks' project-written samples)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS,
                   default=os.environ.get("HARNESS_LOG_LEVEL", "warning").lower(),
                   help="the harness's own messages; below debug, transformers, trl, peft and datasets "
                        "show errors only (default: warning)")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def common(sp):
        sp.add_argument("--config", help="YAML config file or preset name (harness ls presets)")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    def cache_flags(sp):
        group = sp.add_mutually_exclusive_group()
        group.add_argument("--cache", metavar="DIR", help="answer through the response cache in DIR: requests "
                                                          "already answered there are not decoded again")
        group.add_argument("--no-cache", dest="no_cache", action="store_true",
                           help="no response cache, whatever the config says")

    def search_flags(sp):
        sp.add_argument("--method", help="the tree search: optima (default) or toa (several models act)")
        sp.add_argument("--models", help="toa: the models acting beside the policy, comma-separated")

    def credit_flags(sp):
        sp.add_argument("--credit", help="mappa: a coach scores every utterance (per-action credit)")
        sp.add_argument("--coach", help="the coach model for --credit mappa and --selector mappa")

    def run_common(sp):
        sp.add_argument("--task", help=TASK_HELP)
        sp.add_argument("--model", help="the initial policy: catalogue name or local model directory")
        sp.add_argument("--iterations", type=int, help="self-training iterations (default: the config's)")
        sp.add_argument("--suite", help="runs/<suite>/: runs of a suite share their stages before selection")
        sp.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
        sp.add_argument("--online", action="store_true", help="allow the Hugging Face hub")
        sp.add_argument("--out", help="root directory instead of runs/<suite>")
        search_flags(sp)
        credit_flags(sp)
        cache_flags(sp)
        sp.add_argument("--config", "--preset", dest="config", default="cpu",
                        help="preset name or YAML file (default: cpu; harness ls presets)")
        sp.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides: KEY=V reaches every section with KEY; run.KEY=V, synth.KEY=V, "
                             "select.KEY=V, eval.KEY=V (and sft., dpo., lora., influence.) narrow it")

    # Each command's help fits one line of an 80-column `harness --help`.
    r = sub.add_parser("run", help="the self-training experiment, SFT to final eval")
    r.add_argument("--selector", help="harness ls selectors; options as dits:gamma=0")
    r.add_argument("--gamma", type=float, help="DITS: H = minmax(I) + gamma * Q (default: the config's)")
    r.add_argument("--seed", type=int, help=SEED_HELP)
    r.add_argument("--resume", action="store_true", help="continue a killed run at its first unfinished stage")
    r.add_argument("--dry-run", dest="dry_run", action="store_true", help="print the stages and their work")
    run_common(r)
    r.set_defaults(fn=cmd_run)

    su = sub.add_parser("suite", help="several selectors and seeds on shared stages")
    su.add_argument("--selectors", required=True, help="comma-separated, e.g. random,qvalue,dits:gamma=0")
    su.add_argument("--seeds", help="comma-separated seeds (default: the config's)")
    su.add_argument("--budgets", action="append", metavar="SECTION.KEY=V1,V2",
                    help="also run at these synthesis (synth.*) or influence (select.*) budgets, one axis at a "
                         "time; repeatable, e.g. --budgets synth.questions=4,8 --budgets select.validation_size=4,8")
    run_common(su)
    su.set_defaults(fn=cmd_suite)

    t = sub.add_parser("train", help="one training stage alone: LoRA SFT or DPO")
    t.add_argument("--stage", required=True, choices=["sft", "dpo"], help="which training stage to run")
    t.add_argument("--data", required=True, help="sft: sft_data.jsonl (messages); dpo: pairs (prompt, chosen, rejected)")
    t.add_argument("--out", required=True, help="directory: the merged policy goes to OUT/model")
    t.add_argument("--task", help="for the task's DPO beta")
    t.add_argument("--model", help="the policy to train: catalogue name or local model directory")
    t.add_argument("--seed", type=int, help=SEED_HELP)
    common(t)
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="score the two-agent system on a task split")
    e.add_argument("--task", help=TASK_HELP)
    e.add_argument("--model", help="catalogue name (harness ls models) or local model directory")
    e.add_argument("--split", help="train, validation or test (default: the config's)")
    e.add_argument("--limit", type=int, help="first N questions of the split (default: the config's)")
    e.add_argument("--seed", type=int, help=SEED_HELP)
    e.add_argument("--out", help="run directory")
    e.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
    e.add_argument("--online", action="store_true", help="allow the Hugging Face hub")
    e.add_argument("--resume", action="store_true", help="continue a killed evaluation from the batches it finished")
    cache_flags(e)
    common(e)
    e.set_defaults(fn=cmd_eval)

    s = sub.add_parser("synth", help="tree search over dialogues: preference pairs")
    s.add_argument("--task", help=TASK_HELP)
    s.add_argument("--model", help="the policy: catalogue name or local model directory")
    s.add_argument("--questions", type=int, help="training questions, one tree each")
    s.add_argument("--seed", type=int, help=SEED_HELP)
    s.add_argument("--out", help="run directory")
    s.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
    s.add_argument("--online", action="store_true", help="allow the Hugging Face hub")
    s.add_argument("--resume", action="store_true", help="continue a killed run from the trees it finished")
    search_flags(s)
    credit_flags(s)
    cache_flags(s)
    common(s)
    s.set_defaults(fn=cmd_synth)

    sel = sub.add_parser("select", help="keep the best alpha fraction of the pairs")
    sel.add_argument("--selector", help="harness ls selectors")
    sel.add_argument("--pairs", help="pairs.jsonl written by harness synth")
    sel.add_argument("--alpha", type=float, help="fraction of the pairs kept (default: the config's)")
    sel.add_argument("--gamma", type=float, help="DITS: H = minmax(I) + gamma * Q (default: the config's)")
    sel.add_argument("--eta", help="the unit step's learning rate, or 'auto': calibrated so the median unit changes "
                                   "eta_target_share of the validation answers")
    sel.add_argument("--seed", type=int, help=SEED_HELP)
    sel.add_argument("--out", help="run directory")
    sel.add_argument("--credit", help="mappa: the coach also scores the pool of any selector, recorded with the "
                                      "selection (its gap over the pairs kept and over the pool)")
    sel.add_argument("--coach", help="the coach model of --selector mappa and --credit mappa")
    cache_flags(sel)
    common(sel)
    sel.set_defaults(fn=cmd_select)

    an = sub.add_parser("analyze", help="analyses of a selection's estimates")
    asub = an.add_subparsers(dest="analyze_command", required=True)
    ai = asub.add_parser("influence", help="influence estimates against the true gain",
                         description="metric influence, loss influence and Q against the true gain of "
                                     "training on a unit; Spearman and a scatter plot")
    ai.add_argument("--pairs", required=True, help="pairs.jsonl written by harness synth")
    ai.add_argument("--units", type=int, required=True, help="how many units (K) to train on and evaluate")
    ai.add_argument("--steps", type=int, default=4, help="optimizer steps on a unit for its true gain")
    ai.add_argument("--eval-split", dest="eval_split", default="test",
                    help="held-out questions for the true gain (disjoint from the validation split)")
    ai.add_argument("--eval-size", dest="eval_size", type=int, help="default: the validation size")
    ai.add_argument("--seed", type=int, help=SEED_HELP)
    ai.add_argument("--out", help="directory (default: <pairs dir>/analyze_influence)")
    common(ai)
    ai.set_defaults(fn=cmd_analyze_influence)

    def report_common(sp):
        sp.add_argument("--suite", required=True, help="suite name (runs/<name>) or suite directory")
        sp.add_argument("--baselines", help="policies the differences are against, comma-separated "
                        "(default: the report's baselines, optima_full, random and qvalue)")
        sp.add_argument("--target", help="policy whose score the cost-to-target view uses (default: optima_full)")

    rep = sub.add_parser("report", help="a suite's comparison, costs and plots",
                         description="a suite's comparison, cost ledger, cost-per-gain tables and plots")
    report_common(rep)
    rep.add_argument("--out", help="directory (default: <suite>/report)")
    rep.add_argument("--allow-unfinished", dest="allow_unfinished", action="store_true",
                     help="leave unfinished runs out instead of refusing")
    rep.set_defaults(fn=cmd_report)
    lb = sub.add_parser("leaderboard", help="a suite's leaderboard: md, json, html, plots")
    report_common(lb)
    lb.add_argument("--publish", help="folder to publish into (e.g. results/): <folder>/<suite>/, run records included")
    lb.set_defaults(fn=cmd_leaderboard)
    ch = sub.add_parser("check", help="fail when a suite scores below a reference")
    report_common(ch)
    ch.add_argument("--against", required=True, help="reference file, e.g. results/reference/smoke-arc_c.json")
    ch.add_argument("--bless", action="store_true", help="write the suite's scores as the new reference")
    ch.add_argument("--tolerance", type=float, default=0.01, help="with --bless: how far a score may drop")
    ch.add_argument("--keep-lowest", dest="keep_lowest", action="store_true",
                    help="with --bless: merge with the reference, each score the lowest either gave (another CPU's)")
    ch.set_defaults(fn=cmd_check)

    data = sub.add_parser("data", help="list, fetch or build task data")
    dsub = data.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("ls", help="rows and schema problems of a data directory")
    dl.add_argument("--data-dir", dest="data_dir", help="the data directory to list (default: $HARNESS_DATA_DIR)")
    dl.set_defaults(fn=cmd_data_ls)
    f = dsub.add_parser("fetch", help="write a task's hub splits to a data directory")
    f.add_argument("--task", required=True, help="task to fetch (harness ls tasks)")
    f.add_argument("--splits", nargs="+", choices=SPLITS, help="default: every split the hub has")
    f.add_argument("--limit", type=int, help="first N rows of each split")
    f.add_argument("--data-dir", dest="data_dir", help="data directory to write to (default: $HARNESS_DATA_DIR)")
    f.add_argument("--files", nargs="+", metavar="HUB_SPLIT=FILE",
                   help="read the hub's splits from downloaded parquet/JSON/CSV files instead of the hub")
    f.set_defaults(fn=cmd_data_fetch)
    b = dsub.add_parser("build-cbt", help="build CBT items from public-domain books")
    b.add_argument("--books", required=True, help="folder of plain-text books (*.txt, searched recursively)")
    b.add_argument("--out", required=True, help="data directory: the items go to OUT/cbt/")
    b.add_argument("--type", help="word type to blank out (harness ls cbt-types)")
    b.add_argument("--per-book", dest="per_book", type=int, help="at most N items a book")
    b.add_argument("--seed", type=int, help="seed of the split by book and the per-book sample (default: 0)")
    b.add_argument("--spacy-model", dest="spacy_model", help="installed spaCy pipeline with a tagger")
    b.set_defaults(fn=cmd_data_build_cbt)
    bw = dsub.add_parser("build-web", help="build WebWalker wikis from HotpotQA and 2WMH rows",
                         description="one offline wiki per split file in the data directory (hotpotqa/<split>.jsonl, "
                                     "2wmh/<split>.jsonl): an article per context paragraph, letter index pages, the "
                                     "rows' questions with golden paths; questions whose answer can be read on the "
                                     "root or off their paths are dropped and counted. Written to "
                                     "OUT/webwalker/packs/<name>/; train packs feed train, validation packs validation")
    bw.add_argument("--data-dir", dest="data_dir", help="data directory to read the rows from (default: "
                                                        "$HARNESS_DATA_DIR)")
    bw.add_argument("--out", help="data directory to write the packs to (default: the --data-dir)")
    bw.set_defaults(fn=cmd_data_build_web)
    ss = dsub.add_parser("snapshot-web", help="freeze a live site into a WebWalker site pack",
                         description="crawl the site from --root with the agents' link rules (under the root, no "
                                     "javascript:, images or PDFs), breadth first up to --max-pages, always capturing "
                                     "the questions' source pages; the questions whose sources are missing, "
                                     "unreachable or without the answer are marked stale and never asked")
    ss.add_argument("--root", required=True, help="the site's root URL")
    ss.add_argument("--questions", help="WebWalkerQA-schema JSONL: the rows about this site are checked and kept")
    ss.add_argument("--max-pages", dest="max_pages", type=int, default=200, help="pages crawled (default: 200)")
    ss.add_argument("--domain", default="organization", help="the site's WebWalkerQA domain (default: organization)")
    ss.add_argument("--lang", default="en", help="the site's language (default: en)")
    ss.add_argument("--data-dir", dest="data_dir", help="the pack goes to DATA_DIR/webwalker/packs/<host>/")
    ss.add_argument("--out", help="write the pack here instead")
    ss.set_defaults(fn=cmd_data_snapshot_web)
    sw = dsub.add_parser("script-web", help="scripted WebWalker episodes as SFT data",
                         description="each question's golden paths clicked from the root and its gold answer given "
                                     "by the critic: SFT examples for a cold start (harness train --stage sft)")
    sw.add_argument("--split", default="train", choices=SPLITS, help="the questions' split (default: train)")
    sw.add_argument("--limit", type=int, help="first N questions")
    sw.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
    sw.add_argument("--out", required=True, help="JSONL file of SFT examples (harness train --stage sft --data)")
    sw.set_defaults(fn=cmd_data_script_web)

    bn = sub.add_parser("bench", help="throughput against the machine's limits, in one run",
                        description="decoding tokens/s (batch 1 and batched) as fractions of the matmul peak and "
                                    "the memory bandwidth measured in the same run, dialogues/s on hf and "
                                    "llama.cpp's server, tree-search rollouts/s, influence units/s on both paths, "
                                    "the smoke experiment's seconds; printed and written as JSON")
    bn.add_argument("--model", default="smollm2-135m", help="catalogue name or local model directory")
    bn.add_argument("--random-init", dest="random_init", action="store_true",
                    help="a model of --model's config with seeded random weights (throughput does not depend "
                         "on their values; for machines the real weights cannot reach)")
    bn.add_argument("--tokenizer", help="with --random-init: the tokenizer's model (default: --model's own)")
    bn.add_argument("--device", help="cpu or cuda (default: cpu)")
    bn.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                    help="default: float32 on cpu, bfloat16 on cuda")
    bn.add_argument("--only", metavar="PARTS", help="comma-separated parts to run: limits, decode, dialogues, "
                                                    "search, influence, smoke (default: all)")
    bn.add_argument("--skip", metavar="PARTS", help="comma-separated parts to leave out")
    bn.add_argument("--quick", action="store_true", help="small sizes (tests, tiny-fitted)")
    bn.add_argument("--task", default="hotpotqa", help="the workloads' task (default: hotpotqa)")
    bn.add_argument("--data-dir", dest="data_dir", help=DATA_DIR_HELP)
    bn.add_argument("--seed", type=int, default=0, help="the random model's, the prompts' and the runs' seed")
    bn.add_argument("--out", default="results/bench/{machine}.json",
                    help="JSON file; {machine} is the machine's name (default: results/bench/{machine}.json)")
    bn.set_defaults(fn=cmd_bench)

    ls = sub.add_parser("ls", help="list tasks, models, presets and other names")
    ls.add_argument("what", choices=["tasks", "models", "presets", "selectors", "rosters", "metrics", "cbt-types",
                                     "backends"],
                    help="what to list")
    ls.set_defaults(fn=cmd_ls)

    co = sub.add_parser("cost", help="predicted tokens and device-hours of a run, per stage",
                        description="tokens, optimizer steps and device-hours per stage of harness run, from "
                                    "the config's knobs and a task-and-model shape fitted on a real run's ledger "
                                    "(harness/report/cost_model.py)")
    co.add_argument("--config", "--preset", dest="config", default="cpu", help="preset name or YAML file")
    co.add_argument("--task", help=TASK_HELP)
    co.add_argument("--selector", help="harness ls selectors (default: the config's)")
    co.add_argument("--test-size", dest="test_size", type=int, default=1000,
                    help="test questions where the config evaluates the whole split (default: 1000, the reference's)")
    co.add_argument("--shape", default="cbt-smollm2-135m", help="fitted shape (harness/report/shapes.json)")
    co.add_argument("--shape-set", dest="shape_overrides", action="append", metavar="FIELD=VALUE",
                    help="override a field of the shape, e.g. greedy_tokens=60; repeatable")
    co.add_argument("--throughput", default="h100-llama3-8b", choices=["h100-llama3-8b"],
                    help="device profile of tokens a second (overridden by the flags below)")
    co.add_argument("--decode-tps", dest="decode_tps", type=float, help="generated tokens a second")
    co.add_argument("--prefill-tps", dest="prefill_tps", type=float, help="prompt tokens encoded a second")
    co.add_argument("--train-tps", dest="train_tps", type=float, help="trained tokens a second (forward and backward)")
    co.add_argument("--diverged-share", dest="diverged_share", type=float, default=0.05,
                    help="fast influence path: share of validation dialogues a unit's step changes (default 0.05)")
    co.add_argument("--certified-share", dest="certified_share", type=float, default=0.0,
                    help="fast influence path: share of a unit's validation dialogues certified instead of checked "
                         "(default 0: the cost without certification, an upper bound)")
    co.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as harness run takes them")
    co.set_defaults(fn=cmd_cost)

    v = sub.add_parser("validate", help="check a config, or a run's records (--run)",
                       description="check a config (every section, and trl's) without running it; with --run, "
                                   "a run directory's records (its run_spec against the schema, every finished "
                                   "stage against its manifest, the status against the stages): one line per "
                                   "problem, exit 2 if any")
    v.add_argument("--config", "--preset", dest="config", default="cpu", help="preset name or YAML file")
    v.add_argument("--run", metavar="DIR", help="check this run directory's records instead of a config")
    v.add_argument("overrides", nargs="*", metavar="key=value", help="as harness run takes them")
    v.set_defaults(fn=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _logging(args.log_level)
    try:
        return args.fn(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
