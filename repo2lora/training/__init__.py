"""Training: every generator (code2lora static, evolving and names; SHINE; DnD) and the peft
baselines (one shared LoRA; one LoRA per repository). Data arrives as plain examples; what
mines it (`repo2lora.tasks`) and the `repo2lora train` step (`repo2lora.train`) sit above."""
