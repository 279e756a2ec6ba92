"""Generators: repository encodings -> LoRA weights for every (layer, target module)."""
