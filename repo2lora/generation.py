"""Greedy completion with a (possibly adapted) causal LM: the prompt is the text around the
cursor only; the repository knowledge comes from the adapter. Cancellable between steps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# the prompt window's start moves in steps of this many tokens, not on every keystroke, so a
# request typed after the previous one still shares its processed start
WINDOW_STEP = 128


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 48
    single_line: bool = True  # stop at the end of the first non-empty line
    max_prompt_tokens: int = 768
    # the prompt window's start moves in steps of this many tokens (`prompt_ids`): WINDOW_STEP
    # for the editor's prompt cache; 1 cuts exactly at the budget (the benchmark)
    window_step: int = WINDOW_STEP


class Cancelled(Exception):
    """Raised when `should_stop` asked generation to stop."""


@dataclass
class PromptCache:
    """The previous request's prompt token ids and KV cache, valid for one set of weights
    (`key`, e.g. the adapter version): a request that shares its start processes only the new
    tokens. Not thread-safe: use it under the lock that guards the model."""

    key: object = None
    ids: list[int] = field(default_factory=list)
    past: Any = None
    reused_tokens: int = 0  # of the last request, for status and tests

    def usable_prefix(self, key: object, ids: list[int]) -> int:
        if self.past is None or key != self.key:
            return 0
        n = 0
        for a, b in zip(self.ids, ids, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(ids) - 1)  # at least one token is fed to get the next logits


def prompt_ids(tokenizer: Any, prefix: str, limit: int, step: int = WINDOW_STEP) -> list[int]:
    """The prompt's token ids: the end of `prefix`, at most `limit` tokens, its start moved in
    `step`-token steps."""
    ids: list[int] = tokenizer(prefix, add_special_tokens=False, verbose=False)["input_ids"]
    if limit > 0 and len(ids) > limit:
        start = len(ids) - limit
        start = -(-start // step) * step
        ids = ids[start:]
    return ids


@torch.no_grad()
def generate_completion(
    model: Any,
    tokenizer: Any,
    prefix: str,
    config: GenerationConfig = GenerationConfig(),
    should_stop: Callable[[], bool] | None = None,
    cache: PromptCache | None = None,
    cache_key: object = None,
) -> str:
    """Greedy continuation of `prefix`, cut only by its own content (end of line in single-line
    mode, end of sequence, or the token budget), never by anything outside the model's view.

    With a `cache` (and the `cache_key` of the current weights), the prompt tokens shared with
    the previous request are not processed again."""
    limit = config.max_prompt_tokens
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos:
        limit = min(limit, int(max_pos) - config.max_new_tokens)
    ids = prompt_ids(tokenizer, prefix, limit, config.window_step) or [tokenizer.eos_token_id]
    device = next(model.parameters()).device
    past = None
    reuse = 0
    if cache is not None:
        reuse = cache.usable_prefix(cache_key, ids)
        if reuse > 0:
            past = cache.past
            extra = past.get_seq_length() - reuse
            if extra > 0:
                past.crop(-extra)  # keep the shared prompt start only
        cache.key, cache.ids, cache.past, cache.reused_tokens = cache_key, ids, None, reuse
    input_ids = torch.tensor([ids[reuse:]], dtype=torch.long, device=device)
    new: list[int] = []
    text = ""
    eos = tokenizer.eos_token_id
    for _ in range(config.max_new_tokens):
        if should_stop is not None and should_stop():
            raise Cancelled()
        out = model(input_ids=input_ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        if cache is not None and cache.past is None:
            cache.past = past  # holds the prompt; what is decoded after it is cropped next time
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
