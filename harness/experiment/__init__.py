"""The experiment: `harness run` and `harness suite` as a plan of stages, executed and resumed.

- `plan`: the run's configs resolved and checked, its identity and the shared-stage key;
- `pools`: which train rows each iteration's SFT, tree search and probe draw;
- `stages`: the stages of a plan, each a function of its output directory;
- `executor`: runs the unfinished stages, with the status, ledger and results records;
- `work`: what each finished stage recorded about its work, and its headline;
- `suite`: several selectors and seeds on shared stages.

Per iteration: sft_data, sft, probe, mcts, select, dpo, eval (plus eval of the initial and the
SFT-only policy in iteration 0). A stage is finished when its directory exists under its final
name (every stage writes under a temporary name and renames), so a killed run resumes at the
first unfinished stage, and the tree search inside its stage from the trees already grown.

Runs of one suite with the same task, model, seed and pre-selection config share the stages
before the first selection: they live in ``runs/<suite>/shared/<key>/`` (key: a hash of that config
and the model's weights), so selector comparisons differ only by the selection and what follows.
"""
