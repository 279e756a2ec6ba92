"""Greedy completion with a (possibly adapted) causal LM: the prompt is the text around the
cursor only; the repository knowledge comes from the adapter. Cancellable between steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 48
    single_line: bool = True  # stop at the end of the first non-empty line
    max_prompt_tokens: int = 768


class Cancelled(Exception):
    """Raised when `should_stop` asked generation to stop."""


@torch.no_grad()
def generate_completion(
    model: Any,
    tokenizer: Any,
    prefix: str,
    config: GenerationConfig = GenerationConfig(),
    should_stop: Callable[[], bool] | None = None,
) -> str:
    """Greedy continuation of `prefix`, cut only by its own content (end of line in single-line
    mode, end of sequence, or the token budget), never by anything outside the model's view."""
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    limit = config.max_prompt_tokens
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos:
        limit = min(limit, int(max_pos) - config.max_new_tokens)
    ids = ids[-limit:] if limit > 0 else ids
    if not ids:
        ids = [tokenizer.eos_token_id]
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    past = None
    new: list[int] = []
    text = ""
    eos = tokenizer.eos_token_id
    for _ in range(config.max_new_tokens):
        if should_stop is not None and should_stop():
            raise Cancelled()
        out = model(input_ids=input_ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())
        if nxt == eos:
            break
        new.append(nxt)
        text = tokenizer.decode(new, skip_special_tokens=True)
        if config.single_line and "\n" in text.lstrip("\n"):
            lead = len(text) - len(text.lstrip("\n"))
            text = text[: text.index("\n", lead)]
            break
        input_ids = torch.tensor([[nxt]], dtype=torch.long, device=device)
    return text
