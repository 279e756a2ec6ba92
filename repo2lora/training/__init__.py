"""Training: hypernetworks (static and evolving) end to end on the LM loss, and the peft
baselines (one shared LoRA; one LoRA per repository). Data arrives as plain examples; what
mines it (`repo2lora.tasks`) sits above this package."""
