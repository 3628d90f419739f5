"""The stages of a plan, each a function of its output directory."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import runs
from harness.backends import make_backend
from harness.errors import HarnessError
from harness.evaluation import evaluate, served_identity
from harness.records.cost import spent, summed
from harness.experiment.pools import pool_ranges
from harness.experiment.sampling import sample_groups
from harness.mas.dialogue import DialogueConfig
from harness.mas.roster import task_and_roster
from harness.mas.speakers import Speakers
from harness.records import journal
from harness.selection import SELECTORS, run_select
from harness.synth.reward import reward_config
from harness.runs import read_jsonl
from harness.seeding import derive_seed
from harness.synth.synthesis import probe, synthesize
from harness.train.sft_data import build_sft_data
from harness.train.launch import train_stage

if TYPE_CHECKING:
    from harness.experiment.plan import Plan


@dataclass
class Stage:
    name: str
    iteration: int | None  # None: the initial policy's evaluation
    path: Path
    shared: bool
    does: str  # one line for --dry-run
    run: Callable[[Path], None]
    home: Path | None = None  # a shared stage's folder (its lock and ledger): the plan's shared folder unless set

    @property
    def label(self) -> str:
        return self.name if self.iteration is None else f"it{self.iteration}/{self.name}"


class Pipeline:
    """The stages of a plan, each a function of its output directory."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.task, self.roster = task_and_roster(plan.run)

    def stages(self) -> list[Stage]:
        p, run, synth = self.plan, self.plan.run, self.plan.synth
        initial = policy = run.model
        tests = "all" if run.test_questions is None else run.test_questions
        evaluated = f"{tests} greedy dialogues of up to {run.max_turns} x {self.plan.eval.max_new_tokens} tokens"
        out = [Stage("eval", None, p.initial_dir / "eval_initial", True, f"evaluate the initial policy: {evaluated}",
                     self.evaluate(initial, references=True, evalc=p.initial_eval), home=p.initial_dir)]
        sft_examples = len(self.roster.policy_agents) * int(run.sft.questions * run.sft.keep_fraction)
        sft_steps = math.ceil(sft_examples / (run.sft.batch_size * run.sft.grad_accum)) * run.sft.epochs
        rollouts = synth.questions * synth.explore_time * synth.expand_time
        for it in range(run.iterations):
            d = (p.shared_dir if it == 0 else p.run_dir) / f"it{it}"
            mine = p.run_dir / f"it{it}"
            sft_model = str(d / "sft" / "model")
            base = initial if run.sft.from_initial or it == 0 else policy
            out += [
                Stage("sft_data", it, d / "sft_data", it == 0,
                      f"{run.sft.questions} questions x {run.sft.samples} sampled dialogues of up to {run.max_turns} x "
                      f"{run.max_new_tokens} tokens; keep the best per question, top {run.sft.keep_fraction:.0%}",
                      self.sft_data(policy, it)),
                Stage("sft", it, d / "sft", it == 0,
                      f"LoRA SFT of {'the initial model' if base == initial else 'the last policy'}: at most "
                      f"{sft_examples} agent views, {sft_steps} optimizer steps", self.sft(base, d / "sft_data")),
            ]
            if it == 0:
                out.append(Stage("eval_sft", it, d / "eval_sft", True, f"evaluate the SFT-only policy: {evaluated}",
                                 self.evaluate(sft_model)))
            out += [
                Stage("probe", it, d / "probe", it == 0,
                      f"{synth.probe_size} sampled dialogues of up to {synth.max_turns} x {synth.max_new_tokens} "
                      "tokens -> T_norm", self.probe(sft_model, it)),
                Stage("mcts", it, d / "mcts", it == 0,
                      f"{synth.questions} trees, {rollouts} rollouts of up to {synth.max_turns} x "
                      f"{synth.max_new_tokens} tokens", self.mcts(sft_model, d / "probe", it)),
                Stage("select", it, mine / "select", False, self.select_line(), self.select(sft_model, d / "mcts")),
                Stage("dpo", it, mine / "dpo", False,
                      f"LoRA DPO on the selected pairs ({run.dpo.epochs} epoch(s), "
                      f"{run.dpo.batch_size * run.dpo.grad_accum} pairs a step)", self.dpo(sft_model, mine / "select")),
            ]
            policy = str(mine / "dpo" / "model")
            out.append(Stage("eval", it, mine / "eval", False, f"evaluate the DPO policy: {evaluated}",
                             self.evaluate(policy)))
        return out

    def select_line(self) -> str:
        s = self.plan.select
        selector = SELECTORS.get(s.selector)
        if selector.influence:
            scored = (f"{s.influence.validation_size} greedy validation dialogues" if selector.kind == "metric" else
                      f"the DPO loss on up to {s.influence.validation_size} validation pairs")
            return (f"{s.selector}: {s.influence.warmup_steps} LoRA DPO warm-up steps, then per unit of "
                    f"{s.influence.unit_size} pairs one step and {scored}; keep alpha={s.alpha}")
        return f"{s.selector}: keep {'every pair' if SELECTORS.get(s.selector).keeps_all else f'alpha={s.alpha}'}"

    # -- stages ------------------------------------------------------------------------------
    def evaluate(self, model: str, references: bool = False, evalc=None):
        # The reference rows are the initial policy's: the tables show no other policy's.
        # resume: a killed evaluation continues from the batches it finished
        return lambda out: evaluate(dataclasses.replace(evalc or self.plan.eval, model=model, out=str(out),
                                                        references=references), resume=True)

    def backend(self, model: str):
        return make_backend(self.plan.run, model=model)

    def sft_data(self, policy: str, iteration: int):
        def stage(out: Path) -> None:
            run, synth = self.plan.run, self.plan.synth
            lo, hi = pool_ranges(run, synth)[iteration]["sft"]
            task, roster = self.task, self.roster
            questions = task.load("train", run.data_dir, None, run.online)[lo:hi]
            started = time.time()
            backend = self.backend(policy)
            scorer = backend if policy == run.model else self.backend(run.model)
            speakers = Speakers.for_roster(roster, backend, self.backend, policy)
            dialogue_cfg = DialogueConfig(run.max_turns, run.max_new_tokens, run.sft.temperature, synth.top_p,
                                          answer_mode=run.answer_mode, closing_turn=run.closing_turn)
            # The run's config is fixed for its life (a resume refuses a changed one); the policy's
            # weights and the frozen speakers name the models.
            identity = [served_identity(backend), speakers.frozen_info(), dataclasses.asdict(dialogue_cfg)]
            with runs.resumable_directory(out, resume=True) as tmp:
                groups, usage = sample_groups(tmp / journal.FILE, identity, questions, roster, speakers,
                                              run.sft.samples, dialogue_cfg,
                                              derive_seed(run.seed, "sft_data", out.parent.name))
                before = backend.usage.as_dict()
                texts = list(dict.fromkeys(u.text for g in groups for d in g for u in d.utterances))
                nll = dict(zip(texts, scorer.turn_nll(texts)))
                usage.append(spent(before, backend.usage.as_dict()))
                weights = reward_config(synth, 0)  # T_norm is set per question
                epsilon = run.sft.epsilon if run.sft.epsilon is not None else task.recipe.sft_epsilon
                metric = run.metric or self.task.metric
                examples, records = build_sft_data(groups, nll, weights, metric, backend.tokenizer,
                                                   run.sft.keep_fraction, epsilon)
                if not examples:
                    best = max(r["best_reward"]["total"] for r in records)
                    raise HarnessError(f"SFT data: no question's best dialogue has reward >= sft.epsilon {epsilon} "
                                       f"(best {best:.3f} over {len(records)} questions); lower sft.epsilon or "
                                       "sample more (sft.samples)")
                stats = {"questions": len(records), "dialogues": sum(map(len, groups)),
                         "kept_questions": sum(r["kept"] for r in records), "examples": len(examples),
                         "epsilon": epsilon,
                         "reward_weights": {k: v for k, v in vars(weights).items() if k != "t_norm"}, "metric": metric,
                         "policy": backend.model_info, "frozen_speakers": speakers.frozen_info(),
                         "cost": summed(usage) | {"wall_seconds": time.time() - started}}
                runs.write_jsonl(tmp / "sft_data.jsonl", examples)
                runs.write_jsonl(tmp / "questions.jsonl", records)
                runs.write_json(tmp / "stats.json", stats)
                (tmp / journal.FILE).unlink()  # its dialogues are in the records now
        return stage

    def sft(self, base: str, data: Path):
        def stage(out: Path) -> None:
            examples = [row for _, row in read_jsonl(data / "sft_data.jsonl")]
            train_stage("sft", base, examples, self.plan.run, out)
        return stage

    def probe(self, model: str, iteration: int):
        def stage(out: Path) -> None:
            rows = self.task.load("train", self.plan.run.data_dir, None, self.plan.run.online)
            lo, hi = pool_ranges(self.plan.run, self.plan.synth)[iteration]["probe"]
            with runs.run_directory(out) as tmp:
                backend = self.backend(model)
                probe(tmp / "probe.json", rows[lo:hi], self.roster,
                      Speakers.for_roster(self.roster, backend, self.backend, model), self.plan.synth)
        return stage

    def mcts(self, model: str, probe_dir: Path, iteration: int):
        def stage(out: Path) -> None:
            t_norm = json.loads((probe_dir / "probe.json").read_text())["t_norm"]
            offset = pool_ranges(self.plan.run, self.plan.synth)[iteration]["mcts"][0]
            synthesize(dataclasses.replace(self.plan.synth, model=model, out=str(out), t_norm=t_norm,
                                           question_offset=offset), resume=True)
        return stage

    def select(self, model: str, mcts_dir: Path):
        def stage(out: Path) -> None:
            pairs = mcts_dir / "pairs.jsonl"
            if not pairs.read_text().strip():
                raise HarnessError(f"{mcts_dir}: the tree search yielded no pairs, so there is nothing to select "
                                   "(grow more trees: synth.questions, or lower synth.dpo_epsilon)")
            run_select(dataclasses.replace(self.plan.select, pairs=str(pairs), out=str(out), model=model))
        return stage

    def dpo(self, base: str, select_dir: Path):
        def stage(out: Path) -> None:
            pairs = [row for _, row in read_jsonl(select_dir / "selected.jsonl")]
            train_stage("dpo", base, pairs, self.plan.run, out)
        return stage
