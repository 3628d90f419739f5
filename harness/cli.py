"""The `harness` command line: eval, synth, select, data, ls, validate. Commands that run take
`--config FILE` and `key=value` overrides; bad input answers one line and exit status 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from tabulate import tabulate

from harness import config as cfgmod
from harness.config import EvalConfig, SelectConfig, SynthConfig
from harness.errors import HarnessError
from tasks.base import SPLITS


def _offline(online: bool) -> None:
    # The hub is used only when asked for: offline machines fail fast instead of waiting on DNS.
    if not online:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")


def cmd_eval(args) -> int:
    from harness.evaluation import evaluate, results_table

    cfg = cfgmod.build(EvalConfig, args.config, args.overrides, task=args.task, model=args.model,
                       split=args.split, limit=args.limit, seed=args.seed, out=args.out,
                       data_dir=args.data_dir, online=args.online or None)
    _offline(cfg.online)
    result = evaluate(cfg)
    print(results_table(result))
    print(f"run record: {result.run_dir}")
    return 0


def cmd_synth(args) -> int:
    from harness.synth.synthesis import summary_table, synthesize

    cfg = cfgmod.build(SynthConfig, args.config, args.overrides, task=args.task, model=args.model,
                       questions=args.questions, seed=args.seed, out=args.out, data_dir=args.data_dir,
                       online=args.online or None)
    _offline(cfg.online)
    result = synthesize(cfg, resume=args.resume)
    print(summary_table(result))
    print(f"pairs: {result.run_dir / 'pairs.jsonl'}")
    return 0


def cmd_select(args) -> int:
    from harness.selection import run_select

    cfg = cfgmod.build(SelectConfig, args.config, args.overrides, selector=args.selector, pairs=args.pairs,
                       alpha=args.alpha, gamma=args.gamma, seed=args.seed, out=args.out)
    out, selected, rows = run_select(cfg)
    top = sorted((r for r in rows if r["selected"]), key=lambda r: r["rank"])[:10]
    print(tabulate([[r["rank"], r["pair_id"], f"{r['Q']:.3f}", "-" if r["I"] is None else f"{r['I']:.4f}",
                     f"{r['H']:.4f}"] for r in top], ["rank", "pair", "Q", "I", "H"], tablefmt="github"))
    print(f"{len(selected)} of {len(rows)} pairs selected by {cfg.selector}: {out / 'selected.jsonl'}")
    return 0


def _data_dir(args) -> str | None:
    return args.data_dir or os.environ.get("HARNESS_DATA_DIR") or None


def cmd_data_ls(args) -> int:
    from pathlib import Path

    from harness.data.inventory import inventory

    data_dir = _data_dir(args)
    print(f"data directory: {data_dir}" if data_dir else "no data directory (--data-dir or HARNESS_DATA_DIR): "
          "runs read the hub with --online, else the project-written samples in tasks/fixtures")
    records = inventory(Path(data_dir) if data_dir else None)
    print(tabulate([[r["task"], r["split"], "-" if r["rows"] is None else r["rows"], r["source"], r["problem"]]
                    for r in records], ["task", "split", "rows", "source", "problem"], tablefmt="github"))
    bad = sorted({r["source"] for r in records if r["problem"]})
    if bad:
        raise HarnessError(f"schema problems in {len(bad)} file(s): {', '.join(bad)}")
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


def cmd_ls(args) -> int:
    if args.what == "tasks":
        from tasks import TASKS

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
    elif args.what == "selectors":
        from harness.selection import SELECTORS

        print(tabulate([[n, (SELECTORS.get(n).__doc__ or "").split("\n")[0]] for n in SELECTORS],
                       ["selector", "what it keeps"], tablefmt="github"))
    elif args.what == "cbt-types":
        from harness.data.cbt_items import WORD_TYPES

        rows = [[n, WORD_TYPES.get(n).description, " ".join(WORD_TYPES.get(n).tags)] for n in WORD_TYPES]
        print(tabulate(rows, ["type", "blanked words", "tags"], tablefmt="github"))
    elif args.what == "metrics":
        from tasks.metrics import METRICS

        print("\n".join(METRICS.names()))
    return 0


def cmd_validate(args) -> int:
    from harness import models
    from harness.backends import BACKENDS
    from tasks import get_task
    from tasks.metrics import METRICS

    cfg = cfgmod.build(EvalConfig, args.config, args.overrides)
    task = get_task(cfg.task, context_mode=cfg.context_mode)
    METRICS.get(cfg.metric or task.metric)
    BACKENDS.get(cfg.backend)
    models.check(cfg.model)
    print(tabulate(sorted(cfgmod.as_dict(cfg).items()), ["key", "value"], tablefmt="github"))
    print("config is valid")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default=os.environ.get("HARNESS_LOG_LEVEL", "WARNING"))
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--config", help="YAML config file or preset name (harness ls presets)")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    e = sub.add_parser("eval", help="run the two-agent system on a task split and score it")
    e.add_argument("--task")
    e.add_argument("--model", help="catalogue name (harness ls models) or local model directory")
    e.add_argument("--split")
    e.add_argument("--limit", type=int)
    e.add_argument("--seed", type=int)
    e.add_argument("--out", help="run directory")
    e.add_argument("--data-dir", dest="data_dir")
    e.add_argument("--online", action="store_true", help="allow the Hugging Face hub")
    common(e)
    e.set_defaults(fn=cmd_eval)

    s = sub.add_parser("synth", help="grow search trees over dialogues and extract preference pairs")
    s.add_argument("--task")
    s.add_argument("--model", help="the policy: catalogue name or local model directory")
    s.add_argument("--questions", type=int, help="training questions, one tree each")
    s.add_argument("--seed", type=int)
    s.add_argument("--out", help="run directory")
    s.add_argument("--data-dir", dest="data_dir")
    s.add_argument("--online", action="store_true", help="allow the Hugging Face hub")
    s.add_argument("--resume", action="store_true", help="continue a killed run from the trees it finished")
    common(s)
    s.set_defaults(fn=cmd_synth)

    sel = sub.add_parser("select", help="score candidate pairs and keep the best alpha fraction")
    sel.add_argument("--selector", help="harness ls selectors")
    sel.add_argument("--pairs", help="pairs.jsonl written by harness synth")
    sel.add_argument("--alpha", type=float)
    sel.add_argument("--gamma", type=float)
    sel.add_argument("--seed", type=int)
    sel.add_argument("--out", help="run directory")
    common(sel)
    sel.set_defaults(fn=cmd_select)

    data = sub.add_parser("data", help="list, fetch or build task data")
    dsub = data.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("ls", help="rows per task and split in a data directory, and schema problems")
    dl.add_argument("--data-dir", dest="data_dir")
    dl.set_defaults(fn=cmd_data_ls)
    f = dsub.add_parser("fetch", help="write a task's hub splits to a data directory (needs network)")
    f.add_argument("--task", required=True)
    f.add_argument("--splits", nargs="+", choices=SPLITS, help="default: every split the hub has")
    f.add_argument("--limit", type=int, help="first N rows of each split")
    f.add_argument("--data-dir", dest="data_dir")
    f.add_argument("--files", nargs="+", metavar="HUB_SPLIT=FILE",
                   help="read the hub's splits from downloaded parquet/JSON/CSV files instead of the hub")
    f.set_defaults(fn=cmd_data_fetch)
    b = dsub.add_parser("build-cbt", help="build CBT items from public-domain books, split by book")
    b.add_argument("--books", required=True, help="folder of plain-text books (*.txt, searched recursively)")
    b.add_argument("--out", required=True, help="data directory: the items go to OUT/cbt/")
    b.add_argument("--type", help="word type to blank out (harness ls cbt-types)")
    b.add_argument("--per-book", dest="per_book", type=int, help="at most N items a book")
    b.add_argument("--seed", type=int)
    b.add_argument("--spacy-model", dest="spacy_model", help="installed spaCy pipeline with a tagger")
    b.set_defaults(fn=cmd_data_build_cbt)

    ls = sub.add_parser("ls", help="list tasks, models, presets, selectors, metrics or CBT word types")
    ls.add_argument("what", choices=["tasks", "models", "presets", "selectors", "metrics", "cbt-types"])
    ls.set_defaults(fn=cmd_ls)

    v = sub.add_parser("validate", help="check a config without running it")
    common(v)
    v.set_defaults(fn=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
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
