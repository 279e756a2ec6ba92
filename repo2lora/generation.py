"""Greedy completion with a (possibly adapted) causal LM: the prompt is the text around the
cursor only; the repository knowledge comes from the adapter. One loop for the CLI, the server
and the benchmarks, over a `repo2lora.decoding` decoder; cancellable between steps, and a
request that shares its start with the previous one reuses its keys and values. torch is
imported when generating, not with the module: the language server's protocol layer uses its
types before torch has loaded."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repo2lora.decoding import Decoder, DecoderKind

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
    # which forward runs the model (`repo2lora.decoding.make_decoder`): "auto" takes the
    # static-KV loop where the architecture has one; "transformers" is the reference
    decoder: DecoderKind = "auto"


class Cancelled(Exception):
    """Raised when `should_stop` asked generation to stop."""


@dataclass
class PromptCache:
    """The previous request's token ids and the decoder holding their keys and values, valid
    for one model and one set of its weights (`key`, e.g. the adapter version): a request that
    shares its start processes only the new tokens. Not thread-safe: use it under the lock that
    guards the model."""

    key: object = None
    ids: list[int] = field(default_factory=list)  # what `decoder` holds keys and values of
    decoder: Decoder | None = None
    reused_tokens: int = 0  # of the last request, for status and tests

    def forget(self) -> None:
        """Hold nothing reusable (the next request processes its whole prompt); the decoder's
        buffers are kept."""
        self.ids = []

    def usable_prefix(self, model: Any, key: object, ids: list[int]) -> int:
        if self.decoder is None or self.decoder.model is not model or key != self.key:
            return 0
        n = 0
        for a, b in zip(self.ids, ids, strict=False):
            if a != b:
                break
            n += 1
        # at least one token is fed to get the next logits
        return min(n, len(ids) - 1, self.decoder.length)


@dataclass
class CompletionTimings:
    """Where one completion's time went (seconds), filled in by `generate_completion`."""

    tokenize: float = 0.0
    prefill: float = 0.0
    decode: float = 0.0  # all forwards after the prefill
    detokenize: float = 0.0  # token ids to text, and the end-of-line check
    postprocess: float = 0.0  # filled in by a caller that post-processes (the server)
    prompt_tokens: int = 0
    reused_tokens: int = 0
    new_tokens: int = 0  # forwards after the prefill
    decoder: str = ""


def prompt_ids(tokenizer: Any, prefix: str, limit: int, step: int = WINDOW_STEP) -> list[int]:
    """The prompt's token ids: the end of `prefix`, at most `limit` tokens, its start moved in
    `step`-token steps."""
    ids: list[int] = tokenizer(prefix, add_special_tokens=False, verbose=False)["input_ids"]
    if limit > 0 and len(ids) > limit:
        start = len(ids) - limit
        start = -(-start // step) * step
        ids = ids[start:]
    return ids


def generate_completion(
    model: Any,
    tokenizer: Any,
    prefix: str,
    config: GenerationConfig = GenerationConfig(),
    should_stop: Callable[[], bool] | None = None,
    cache: PromptCache | None = None,
    cache_key: object = None,
    timings: CompletionTimings | None = None,
) -> str:
    """Greedy continuation of `prefix`, cut only by its own content (end of line in single-line
    mode, end of sequence, or the token budget), never by anything outside the model's view.

    With a `cache` (and the `cache_key` of the current weights), the tokens shared with the
    previous request are not processed again, and the decoder's buffers are reused.
    `should_stop` is asked before every forward; `timings`, when given, is filled in."""
    import torch

    with torch.no_grad():
        return _generate(model, tokenizer, prefix, config, should_stop, cache, cache_key, timings)


def _generate(
    model: Any,
    tokenizer: Any,
    prefix: str,
    config: GenerationConfig,
    should_stop: Callable[[], bool] | None,
    cache: PromptCache | None,
    cache_key: object,
    timings: CompletionTimings | None,
) -> str:
    from repo2lora.decoding import decoder_kind, make_decoder

    t = timings if timings is not None else CompletionTimings()
    clock = time.perf_counter()
    limit = config.max_prompt_tokens
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos:
        limit = min(limit, int(max_pos) - config.max_new_tokens)
    ids = prompt_ids(tokenizer, prefix, limit, config.window_step) or [tokenizer.eos_token_id]
    decoder = cache.decoder if cache is not None else None
    if (
        decoder is None
        or decoder.model is not model
        or decoder.kind != decoder_kind(model, config.decoder)
    ):
        decoder = make_decoder(model, config.decoder)
    reuse = 0
    if cache is not None and cache.decoder is decoder:
        reuse = cache.usable_prefix(model, cache_key, ids)
    decoder.truncate(reuse)
    held = ids[:reuse]  # what the decoder holds keys and values of
    if cache is not None:
        # a cancelled or failed run leaves `held` true: it is updated only after each forward
        cache.key, cache.ids, cache.decoder, cache.reused_tokens = cache_key, held, decoder, reuse
    now = time.perf_counter()
    t.tokenize, clock = now - clock, now
    t.prompt_tokens, t.reused_tokens, t.new_tokens = len(ids), reuse, 0
    t.decoder = type(decoder).__name__
    new: list[int] = []
    text = ""
    eos = tokenizer.eos_token_id
    feed = ids[reuse:]
    for step in range(config.max_new_tokens):
        if should_stop is not None and should_stop():
            raise Cancelled()
        logits = decoder.feed(feed)
        held.extend(feed)
        nxt = int(logits.argmax())
        now = time.perf_counter()
        if step == 0:
            t.prefill += now - clock
        else:
            t.decode += now - clock
            t.new_tokens += 1
        clock = now
        if nxt == eos:
            break
        new.append(nxt)
        text = tokenizer.decode(new, skip_special_tokens=True)
        done = config.single_line and "\n" in text.lstrip("\n")
        if done:
            lead = len(text) - len(text.lstrip("\n"))
            text = text[: text.index("\n", lead)]
        now = time.perf_counter()
        t.detokenize += now - clock
        clock = now
        if done:
            break
        feed = [nxt]
    return text
