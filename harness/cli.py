"""The `harness` command line: eval, synth, select, ls, validate. Every command takes `--config FILE` and
`key=value` overrides; bad input answers one line and exit status 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tabulate import tabulate

from harness import config as cfgmod
from harness.config import EvalConfig, SelectConfig, SynthConfig
from harness.errors import HarnessError


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

    ls = sub.add_parser("ls", help="list tasks, models, presets, selectors or metrics")
    ls.add_argument("what", choices=["tasks", "models", "presets", "selectors", "metrics"])
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
