"""What a run leaves on disk and how it is checked: records that describe themselves.

- `schemas`: the JSON schemas of the records (package data beside this file), one checker;
- `spec`: `run_spec.json` of every kind (run, select, eval, synth) from one builder, with its
  `schema_version`; where a recorded path is now;
- `manifest`: a finished stage's files with their size and sha256, written after them;
- `cost`: the uniform cost record of a finished stage (`stage_cost.json`);
- `lock`: kernel locks on a run directory and on shared stages, which die with their holder;
- `status`: a run's state, "running" only while its lock is held;
- `journal`: a stage's finished batches, append-only, so a kill loses at most the batch under way;
- `chaos`: the one fault-injection seam (`HARNESS_CHAOS_KILL`), which the chaos test kills at;
- `validate`: `harness validate --run DIR`.

Writers (the executor, the selection, evaluation and synthesis) and readers (reports) both import
these; they import no engine, training, method or torch, so reports read files only.
"""
