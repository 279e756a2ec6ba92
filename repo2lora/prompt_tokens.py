"""A prompt's token ids without re-tokenising the whole document at every keystroke.

The server's prompt is the document before the cursor; `repo2lora.generation.prompt_ids` needs
all of its tokens (the window's start is counted from them), and tokenising a 13k-character
prefix took ~4 ms of every request, growing with the file. For a byte-level BPE with GPT-2's
pre-tokenising regex and no normaliser (the embedded default's, GPT-2's, Qwen's and Llama-3's
kind), a line start whose first character is not whitespace, right after a newline, is always
a boundary between pre-tokens (no pattern joins a newline to what follows it, the patterns look
no further back than where they start, and a BPE merge never crosses a pre-token). What a piece
ends with depends on one character after it (two newlines before a letter are two pre-tokens,
at the end of the text one), so a piece is tokenised with the next piece's first character,
whose own tokens are then dropped; the ids of the text are those of its pieces, joined.
`PromptTokenizer` tokenises each piece once and keeps it (pieces are top-level blocks of code:
only the one being edited is new); any other tokenizer is called on the whole text, as
before."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

# a newline followed by a character that is not whitespace: the piece boundary is after "\n"
_BOUNDARY = re.compile(r"\n(?=\S)")
_PIECES_KEPT = 4096


def _splittable(backend: Any) -> bool:
    """Whether `backend` (a `tokenizers.Tokenizer`) tokenises pieces between boundaries as it
    tokenises the whole text."""
    try:
        spec = json.loads(backend.to_str())
    except Exception:  # not a tokenizers.Tokenizer
        return False
    pre = spec.get("pre_tokenizer") or {}
    added = [t.get("content", "") for t in spec.get("added_tokens", [])]
    return (
        spec.get("normalizer") is None
        and (spec.get("model") or {}).get("type") == "BPE"
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex") is True
        and pre.get("add_prefix_space") is False
        and not any("\n" in a for a in added)  # an added token never spans a boundary
    )


def split_pieces(text: str) -> list[str]:
    """`text` cut after every newline that a non-whitespace character follows."""
    starts = [0, *(m.end() for m in _BOUNDARY.finditer(text))]
    return [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True) if a < b]


class PromptTokenizer:
    """Wraps a tokenizer (transformers' or `repo2lora.models.light_llama.LightTokenizer`) with
    the calls `repo2lora.generation` makes; prompts are tokenised piece by piece, each piece
    once (`_PIECES_KEPT` kept). Not thread-safe: use it under the lock that guards the model."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
            tokenizer, "backend", None
        )
        self._backend = backend if backend is not None and _splittable(backend) else None
        self._pieces: OrderedDict[str, list[int]] = OrderedDict()

    @property
    def splits(self) -> bool:
        return self._backend is not None

    def __call__(
        self, text: str, add_special_tokens: bool = False, verbose: bool = False
    ) -> dict[str, list[int]]:
        if self._backend is None or add_special_tokens:
            ids = self.tokenizer(text, add_special_tokens=add_special_tokens, verbose=verbose)
            return {"input_ids": list(ids["input_ids"])}
        out: list[int] = []
        pieces = split_pieces(text)
        for i, piece in enumerate(pieces):
            key = piece + (pieces[i + 1][0] if i + 1 < len(pieces) else "")  # + what it sees
            ids = self._pieces.get(key)
            if ids is None:
                ids = self._encode(key)
                if len(key) > len(piece):  # the next piece's first character: its own tokens
                    ids = ids[: len(ids) - len(self._encode(key[-1]))]
                self._pieces[key] = ids
                if len(self._pieces) > _PIECES_KEPT:
                    self._pieces.popitem(last=False)
            else:
                self._pieces.move_to_end(key)
            out.extend(ids)
        return {"input_ids": out}

    def _encode(self, text: str) -> list[int]:
        assert self._backend is not None
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
