"""The headline figure each stage prints when it ends, read from the stage's files only. (What
each stage recorded about its work is its cost record: `harness.records.cost`.)"""

from __future__ import annotations

import json
from pathlib import Path


def _score_line(stats: dict) -> str:
    norm = f", acc_norm {stats['mean_norm']:.4f}" if "mean_norm" in stats else ""
    return (f"{stats['metric']} {stats['mean']:.4f} ± {stats['stderr']:.4f} over {stats['n']} questions{norm} "
            f"(answers: {stats.get('answer_mode', 'generate')}; answered {stats['answered_rate']:.0%})")


def _selection_line(spec: dict) -> str:
    line = f"kept {spec['selected']} of {spec['candidates']} pairs"
    res = spec.get("selector_facts", {}).get("resolution")
    if res:
        line += f"; influence: {res['distinct_values']} distinct values over {res['units']} units"
        if "split_half_spearman" in res:
            rho = res["split_half_spearman"]
            line += f", split-half Spearman {'-' if rho is None else f'{rho:+.2f}'}"
        if res.get("degenerate"):
            line += f", degenerate: {res['degenerate']}"
    return line


# Each stage's headline figure, printed when it ends: (the record it reads, the line from it).
HEADLINES = {
    "eval": ("stats.json", _score_line),
    "eval_sft": ("stats.json", _score_line),
    "sft_data": ("stats.json", lambda s: f"{s['examples']} SFT examples from {s['kept_questions']} of "
                                         f"{s['questions']} questions"),
    "sft": ("stats.json", lambda s: f"{s['steps']} steps on {s['examples']} examples, train loss {s['train_loss']:.4f}"),
    "probe": ("probe.json", lambda s: f"T_norm {s['t_norm']}"),
    "mcts": ("summary.json", lambda s: f"{s['pairs']} pairs from {s['trees']} trees "
                                       f"({s['trees_without_pairs']} without a pair)"),
    "select": ("run_spec.json", _selection_line),
    "dpo": ("stats.json", lambda s: f"{s['steps']} steps on {s['pairs']} pairs, train loss {s['train_loss']:.4f}"),
}


def headline(name: str, path: Path) -> str:
    file, line = HEADLINES[name]
    return line(json.loads((path / file).read_text()))
