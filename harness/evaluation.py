"""`harness eval`: the two-agent system on a task split, scored, with a complete run record."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness import config as cfgmod
from harness import machine, models, runs
from harness.backends import make_backend
from harness.backends.response_cache import model_identity
from harness.config import EvalConfig
from harness.errors import HarnessError
from harness.judge import Judge
from harness.mas import web
from harness.mas.dialogue import Dialogue, DialogueConfig, run_dialogues, start
from harness.mas.progress import UtteranceBar
from harness.mas.roster import task_and_roster
from harness.mas.scoring import dialogue_score
from harness.mas.speakers import Speakers
from harness.records import journal, spec
from harness.records.cost import spent, summed
from harness.references import applies, reference_rows
from harness.seeding import seed_everything
from harness.tasks.metrics import METRICS, score
from harness.web.env import SETTING

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    run_dir: Path
    run_spec: dict
    stats: dict
    cost: dict
    per_instance: list[dict]


def mean_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def instance_record(d: Dialogue, metric: str, tokenizer, labels: tuple[str, ...] = ()) -> dict:
    """A dialogue's per-instance line; `labels`: the question meta its task's breakdown reads."""
    q = d.question
    record = {
        "id": q.id, "question": q.question, "gold": list(q.golds), "prediction": d.final_answer,
        "score": dialogue_score(d, metric, tokenizer),
        "answered": bool(d.final_answer), "turns": len(d.utterances), "stop": d.stop,
        "tokens": sum(u.completion_tokens for u in d.utterances), "tokens_per_agent": d.tokens_by_agent(),
        "transcript": [{"speaker": u.speaker, "text": u.text, "answer": u.answer, "tokens": u.completion_tokens,
                        "truncated": u.truncated} | ({"closing": True} if u.closing else {})
                       | ({"observation": u.observation} if u.observation is not None else {})
                       | ({"choice_logprobs": u.choice_logprobs, "answer_norm": u.answer_norm}
                          if u.choice_logprobs is not None else {}) for u in d.utterances],
    }
    if labels:
        record["labels"] = {name: q.meta.get(name) for name in labels}
    if d.roster.web is not None:  # the pages the episode went through, the text shown being in the transcript
        record["trajectory"] = web.trajectory(d)
    if any(u.choice_logprobs is not None for u in d.utterances):
        record |= {"prediction_norm": d.final_answer_norm,
                   "score_norm": score(metric, d.final_answer_norm, q.golds, options=q.options, tokenizer=tokenizer)}
    return record


def evaluate(config: EvalConfig | None = None, resume: bool = False, **overrides) -> EvalResult:
    """Python API of `harness eval`: returns what it writes. Overrides are config keys. The dialogues
    run `batch_size` at a time, each batch (and the reference rows after them) journaled as it ends
    (`harness.records.journal`) in the output's partial directory; `resume=True` continues from what
    a killed evaluation finished (without it, a stale partial directory is cleared)."""
    cfg = cfgmod.build(EvalConfig, overrides={**cfgmod.as_dict(config or EvalConfig()), **overrides})
    task, roster = task_and_roster(cfg)
    metric = cfg.metric or task.metric
    METRICS.get(metric)
    cfg = dataclasses.replace(cfg, answer_mode=task.answer_mode(cfg.answer_mode))
    answer_mode = cfg.answer_mode
    for model in (cfg.model, *roster.frozen_models):
        models.check(model)
    questions = task.load(cfg.split, cfg.data_dir, cfg.limit, cfg.online)
    if not questions:
        raise HarnessError(f"{cfg.task}/{cfg.split}: no questions to evaluate")
    rid = runs.run_id("eval", task=cfg.task, model=cfg.model, split=cfg.split, seed=cfg.seed,
                      n=len(questions), metric=metric, answer=answer_mode)
    out = Path(cfg.out) if cfg.out else Path("runs") / "eval" / runs.dir_name(rid)

    seed_everything(cfg.seed)
    started = time.time()
    backend = make_backend(cfg)
    speakers = Speakers.for_roster(roster, backend, lambda model: make_backend(cfg, model=model), cfg.model)
    judge = Judge.build(cfg) if cfg.judge else None
    load_seconds = time.time() - started
    dialogue_cfg = DialogueConfig(max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, answer_mode=answer_mode,
                                  closing_turn=cfg.closing_turn)
    # A forward pass holds batch_size rows anyway; running the dialogues a batch at a time keeps
    # only that many dialogues' key/value caches in memory (a 1,000-token agent prompt of SmolLM2
    # holds about 46 MB of them), and makes each batch a checkpoint.
    batches = [questions[i:i + cfg.batch_size] for i in range(0, len(questions), cfg.batch_size)]
    wanted = cfg.references and answer_mode == "choice" and applies(task) and roster.slots > 0
    # What a batch's records depend on. The reference rows are one more unit, after the dialogues.
    settings = {k: v for k, v in cfgmod.as_dict(cfg).items() if not spec.execution_key(k)}
    identity = [settings, served_identity(backend), speakers.frozen_info()]
    keys = [journal.key("eval", *identity, i, [q.id for q in b]) for i, b in enumerate(batches)]
    keys += [journal.key("references", *identity, [q.id for q in questions])] if wanted else []
    with runs.resumable_directory(out, resume) as tmp:
        journaled = journal.Journal(tmp / journal.FILE, keys)
        with UtteranceBar(len(questions), dialogue_cfg.max_utterances, f"eval {cfg.task}",
                          done=sum(len(batches[i]) for i in journaled.finished if i < len(batches))) as bar:
            def unit(i: int) -> dict:
                before = backend.usage.as_dict()
                if i == len(batches):
                    return {"references": reference_rows(questions, backend),
                            "usage": spent(before, backend.usage.as_dict())}
                dialogues = run_dialogues(start(batches[i], roster), speakers, dialogue_cfg, cfg.seed, bar)
                return {"records": [instance_record(d, metric, backend.tokenizer, task.breakdown) for d in dialogues],
                        "usage": spent(before, backend.usage.as_dict())}

            done = journaled.run(unit)
        references = done[-1]["references"] if wanted else {}
        usage = [u["usage"] for u in done]

        per_instance = [r for b in done[:len(batches)] for r in b["records"]]
        stats = {"task": cfg.task, "split": cfg.split, "metric": metric, **summary(per_instance),
                 "answer_mode": answer_mode}
        if references:
            stats["references"] = {name: row["mean"] for name, row in references.items()}
        if judge is not None:
            stats["judge"] = judged(judge, per_instance)
        if task.breakdown:
            stats["breakdown"] = breakdown(per_instance, task.breakdown)
        cost = {**summed(usage), "wall_seconds": time.time() - started, "model_load_seconds": load_seconds,
                "dialogues": len(per_instance)} | ({"judge": dict(judge.grader.spent)} if judge else {})
        run_spec = spec.run_spec("eval", rid, cfgmod.as_dict(cfg), cfg.seed, device=machine.device_info(cfg.device),
                                 dialogue=vars(dialogue_cfg), setting=task.setting, answer_mode=answer_mode,
                                 model=backend.model_info, frozen_speakers=speakers.frozen_info(),
                                 data={"source": task.source, "question_ids": [q.id for q in questions]},
                                 **({"web_setting": SETTING} if roster.web is not None else {}))
        runs.write_json(tmp / "run_spec.json", run_spec)
        runs.write_jsonl(tmp / "per_instance.jsonl", per_instance)
        runs.write_json(tmp / "stats.json", stats)
        runs.write_json(tmp / "cost.json", cost)
        if references:
            runs.write_json(tmp / "references.json", references)
        (tmp / journal.FILE).unlink()  # the records hold its batches now
    return EvalResult(out, run_spec, stats, cost, per_instance)


def summary(records: list[dict]) -> dict:
    """The figures of some per-instance records (an evaluation's, or one cell of its breakdown): the
    score, the answers, the cost and, where the records have them, acc_norm, the episodes' pages and
    the judge's accuracy."""
    n = len(records)
    mean, stderr = mean_stderr([r["score"] for r in records])
    figures = {"mean": mean, "stderr": stderr, "n": n,
               "mean_tokens_per_dialogue": sum(r["tokens"] for r in records) / n,
               "mean_turns": sum(r["turns"] for r in records) / n,
               "answered_rate": sum(r["answered"] for r in records) / n,
               "agreement_rate": sum(r["stop"] == "agreement" for r in records) / n}
    if all("score_norm" in r for r in records):  # lm-eval's acc_norm beside acc: answers per byte
        figures["mean_norm"] = sum(r["score_norm"] for r in records) / n
    if all("trajectory" in r for r in records):
        figures["mean_pages"] = sum(r["trajectory"]["pages"] for r in records) / n
        with_sources = [r["trajectory"] for r in records if r["trajectory"]["sources"]]
        figures["sources_opened_rate"] = (sum(t["sources_opened"] == t["sources"] for t in with_sources)
                                          / len(with_sources) if with_sources else None)
    if all("judge" in r for r in records):
        figures["judge_accuracy"] = sum(r["judge"]["correct"] for r in records) / n
    return figures


def breakdown(per_instance: list[dict], labels: tuple[str, ...]) -> list[dict]:
    """The summary of each cell: the records sharing one value of one label (unlabelled records
    form the cell None), label by label."""
    rows = []
    for label in labels:
        cells: dict = {}
        for r in per_instance:
            cells.setdefault(r["labels"].get(label), []).append(r)
        rows += [{"label": label, "value": value, **summary(records)}
                 for value, records in sorted(cells.items(), key=lambda kv: str(kv[0]))]
    return rows


def judged(judge: Judge, per_instance: list[dict]) -> dict:
    """The judge's verdict on each record (added to it) and its accuracy over them, with its name."""
    verdicts = judge.grade([(r["question"], r["gold"], r["prediction"] or "") for r in per_instance])
    for record, v in zip(per_instance, verdicts):
        record["judge"] = {"correct": v.correct, "parsed": v.parsed, "reply": v.reply}
    mean, stderr = mean_stderr([float(v.correct) for v in verdicts])
    asked = [v for v, r in zip(verdicts, per_instance) if r["prediction"]]
    info = judge.info()
    return {"name": info["model"]["name"], "accuracy": mean, "stderr": stderr,
            "parse_rate": sum(v.parsed for v in asked) / len(asked) if asked else None,
            "prompt_version": info["prompt_version"], "model": info["model"], "backend": info["backend"]}


def served_identity(backend) -> dict:
    """The model a backend answers with, for the keys of journaled batches: a resumed stage may
    answer on other servers (an execution setting), so a served model is named by its id and
    declared revision, not its address."""
    return {k: v for k, v in model_identity(backend.model_info).items() if k != "base_url"}


def results_table(result: EvalResult) -> str:
    s, c = result.stats, result.cost
    row = [s["task"], s["split"], result.run_spec["model"]["name"], s["metric"], f"{s['mean']:.4f}",
           f"{s['stderr']:.4f}", s["n"], f"{s['mean_tokens_per_dialogue']:.1f}", f"{s['mean_turns']:.1f}",
           f"{s['answered_rate']:.2f}", f"{c['wall_seconds']:.1f}"]
    headers = ["task", "split", "model", "metric", "value", "± stderr", "n", "tokens/dialogue", "turns",
               "answered", "wall s"]
    if "judge" in s:  # the judge's accuracy in its own column, named after the judge
        headers.append(f"judge acc ({s['judge']['name']})")
        row.append(f"{s['judge']['accuracy']:.4f}")
    rows = [row] + [[s["task"], s["split"], f"reference: {name}", s["metric"], f"{mean:.4f}", "", s["n"]]
                    + [""] * (len(headers) - 7) for name, mean in s.get("references", {}).items()]
    table = tabulate(rows, headers=headers, tablefmt="github")
    return table + (f"\n\n{breakdown_table(s['breakdown'], s['metric'])}" if s.get("breakdown") else "")


# The breakdown's columns: (header, figure of a cell's summary, format); a figure a cell lacks is left out.
BREAKDOWN_COLUMNS = (("n", "n", "d"), ("{metric}", "mean", ".4f"), ("± stderr", "stderr", ".4f"),
                     ("answered", "answered_rate", ".2f"), ("tokens/dialogue", "mean_tokens_per_dialogue", ".1f"),
                     ("turns", "mean_turns", ".1f"), ("pages", "mean_pages", ".1f"),
                     ("all sources opened", "sources_opened_rate", ".2f"), ("judge acc", "judge_accuracy", ".4f"))


def breakdown_table(rows: list[dict], metric: str) -> str:
    columns = [c for c in BREAKDOWN_COLUMNS if any(c[1] in r for r in rows)]

    def shown(value, fmt: str = "") -> str:  # a figure a cell cannot have (stderr of one item): "-"
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    body = [[r["label"], shown(r["value"])] + [shown(r.get(key), fmt) for _, key, fmt in columns] for r in rows]
    return tabulate(body, headers=["label", "value"] + [h.format(metric=metric) for h, _, _ in columns],
                    tablefmt="github", disable_numparse=True)
