"""The experiment: `harness run` and `harness suite` as a plan of stages, executed and resumed.

- `plan`: the run's configs resolved and checked, its identity and the shared-stage key;
- `pools`: which train rows each iteration's SFT, tree search and probe draw;
- `stages`: the stages of a plan, each a function of its output directory;
- `executor`: runs the unfinished stages under the run's lock, with the spec, status, cost, manifest,
  ledger and results records (`harness.records`);
- `work`: the headline each stage prints when it ends;
- `sampling`: the SFT data stage's sampled dialogues, a journaled batch at a time;
- `suite`: several selectors and seeds on shared stages.

Per iteration: sft_data, sft, probe, mcts, select, dpo, eval (plus eval of the initial and the
SFT-only policy in iteration 0). A stage is finished when its manifest (its files with their sha256)
is written after them, so a killed run resumes at the first unfinished stage (a stage whose files
were cut since is redone), and inside it from the work it finished: the tree search from its trees,
the evaluations and the SFT data from their batches of dialogues (`sampling`, `harness.records.journal`),
the influence estimate from its units, SFT and DPO from trl's checkpoints (`train.checkpoint_steps`).
`chaos_trainer` puts trl's checkpoints under the chaos test's seam (`harness.records.chaos`).

Runs of one suite with the same task, model, seed and pre-selection config share the stages
before the first selection: they live in ``runs/<suite>/shared/<key>/`` (key: a hash of that config
and the model's weights), so selector comparisons differ only by the selection and what follows.
"""
