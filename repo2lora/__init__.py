"""repo2lora: a git repository -> a LoRA adapter for a code language model, in one forward pass."""

__version__ = "0.1.0"
