"""Generators: repository encodings -> LoRA weights for every (layer, target module), each
implementing one interface (`protocol.Generator`)."""
