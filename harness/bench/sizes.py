"""How much work each part of `harness bench` does: one set for tests (`--quick`, on tiny-fitted), one
for a 2-core CPU (SmolLM2) and one for a GPU (SmolLM2's or Llama-3-8B's architecture, in 420 s)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    reps: int  # timed repetitions of each limit (the best counts)
    matmul: int  # the peak's square matrices' side
    copy_bytes: int  # the bandwidth's tensor
    decode_batch: int  # the batched decoding's rows (the other decoding is batch 1)
    decode_prompt: int  # tokens a row encoded before decoding
    decode_steps: int
    decode_rounds: int  # rounds alternating batch 1 and batched, the best of each kept
    dialogues: int  # two-agent dialogues a round, on each engine
    dialogue_rounds: int  # rounds alternating hf and llama.cpp
    max_turns: int
    max_new_tokens: int
    trees: int  # tree-search questions, their rollouts batched together
    explore_time: int
    expand_time: int
    units: int  # influence units of one pair each, on both paths
    validation_size: int
    warmup_steps: int  # LoRA DPO steps before the units (the same work on both paths)
    eta: float


SIZES = {
    "quick": Sizes(reps=3, matmul=512, copy_bytes=64 << 20, decode_batch=8, decode_prompt=32, decode_steps=16,
                   decode_rounds=2, dialogues=2, dialogue_rounds=1, max_turns=2, max_new_tokens=16, trees=2,
                   explore_time=1, expand_time=2, units=2, validation_size=2, warmup_steps=0,
                   eta=1e-2),
    "cpu": Sizes(reps=5, matmul=2048, copy_bytes=512 << 20, decode_batch=8, decode_prompt=256, decode_steps=32,
                 decode_rounds=3, dialogues=8, dialogue_rounds=2, max_turns=4, max_new_tokens=64, trees=4,
                 explore_time=2, expand_time=3, units=4, validation_size=6, warmup_steps=1,
                 eta=1.35e-2),
    # One round of dialogues: llama.cpp's server there is the CPU build, one sequence at a time.
    "gpu": Sizes(reps=10, matmul=8192, copy_bytes=4 << 30, decode_batch=64, decode_prompt=512, decode_steps=128,
                 decode_rounds=3, dialogues=16, dialogue_rounds=1, max_turns=4, max_new_tokens=64, trees=8,
                 explore_time=2, expand_time=3, units=8, validation_size=10, warmup_steps=1,
                 eta=1.35e-2),
}


def sizes_for(quick: bool, device: str) -> tuple[str, Sizes]:
    name = "quick" if quick else "gpu" if device.startswith("cuda") else "cpu"
    return name, SIZES[name]
