"""A cheap first-order influence screen, importable by synthesis and by DITS (neither imports the
other): the policy with the LoRA adapter every influence step trains (`policy`), the DPO loss of
those steps (`dpo`), a differentiable answer-aware surrogate of the validation metric read off
theta*'s validation dialogues (`surrogate`), and the screen itself (`first_order`: `InfluenceScreen`).
"""
