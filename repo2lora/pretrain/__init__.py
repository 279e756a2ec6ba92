"""Pretraining the embedded default: a small Python code LM and its BPE tokenizer, made from the
Python source available on the machine (standard library and installed packages)."""
