"""Training (SFT and DPO with trl and LoRA), the SFT data rules, the iteration loop of `harness run`
and the selector comparison of `harness suite`."""
