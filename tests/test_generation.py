"""Greedy completion: reference-free stopping, and prompt KV-cache reuse that changes nothing
but the work done."""

from __future__ import annotations

import torch

from repo2lora.generation import GenerationConfig, PromptCache, generate_completion, prompt_ids
from repo2lora.models import describe_base_model, load_base_model

TEXT = "import os\n\n\ndef read_config(path):\n    with open(path) as fh:\n        return fh."


def test_cached_prompt_gives_the_same_completion_with_less_work() -> None:
    m = load_base_model(describe_base_model("tiny-random"))
    cfg = GenerationConfig(max_new_tokens=12, single_line=False)
    cache = PromptCache()
    first = generate_completion(m.model, m.tokenizer, TEXT, cfg, cache=cache, cache_key=1)
    assert cache.reused_tokens == 0
    typed = TEXT + "rea"
    again = generate_completion(m.model, m.tokenizer, typed, cfg, cache=cache, cache_key=1)
    assert cache.reused_tokens == len(m.tokenizer(TEXT)["input_ids"])
    assert again == generate_completion(m.model, m.tokenizer, typed, cfg)
    assert first == generate_completion(m.model, m.tokenizer, TEXT, cfg)
    # other weights (a swapped adapter) never reuse the old keys and values
    generate_completion(m.model, m.tokenizer, typed, cfg, cache=cache, cache_key=2)
    assert cache.reused_tokens == 0


def test_prompt_window_moves_in_steps() -> None:
    tok = load_base_model(describe_base_model("tiny-random")).tokenizer
    a = prompt_ids(tok, "x" * 1000, 300)
    b = prompt_ids(tok, "x" * 1010, 300)
    assert len(a) <= 300 and len(b) <= 300
    assert len(a) == 1000 - 768 and len(b) == 1010 - 768  # both start at token 768
    assert torch.tensor(prompt_ids(tok, "abc", 300)).tolist() == tok("abc")["input_ids"]


def test_a_window_step_of_one_cuts_the_prompt_exactly_at_the_budget() -> None:
    tok = load_base_model(describe_base_model("tiny-random")).tokenizer
    text = "x" * 300
    assert len(prompt_ids(tok, text, 256, step=1)) == 256
    assert len(prompt_ids(tok, text, 256)) == 300 - 128  # the editor's 128-token steps
