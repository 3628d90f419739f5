"""`harness bench`: the harness's throughput on one machine, each figure beside the machine's limits
measured in the same run, written to results/bench/<machine>.json. Modules with one job each:

- `limits`: the matmul peak and the memory bandwidth;
- `decode`: decoding tokens/s at batch 1 and batched, and their fractions of those limits;
- `engines`, `search`, `influence`, `smoke`: the harness's workloads, timed (two-agent dialogues on
  hf and llama.cpp's server, the tree search, DITS influence on both paths, the smoke experiment);
  `benchmarks/*.py` run the same functions at other sizes;
- `subject`: the model measured, the named one or a random one of its architecture;
- `sizes`, `parts`, `record`, `run`: how much work, the parts, what is written and printed, the run.
"""
