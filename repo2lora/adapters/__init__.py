"""LoRA weights: what a generator produces (`weights`), how they are applied to a loaded model
(`apply`), how they are saved as a standard PEFT adapter directory (`peft_dir`), and the
default LoRA shape (`defaults`)."""
