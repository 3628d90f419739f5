"""Training: SFT and DPO with trl and LoRA, and the SFT data rules. The experiment that runs them is
`harness.experiment`."""
