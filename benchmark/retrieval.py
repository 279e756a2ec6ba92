"""The retrieval baseline: BM25 (the `bm25s` library) over the chunks the encoder sees, with
the best chunks placed in front of the task's prompt under the same total token budget every
other method gets, so retrieval pays for its context with prompt tokens, visibly."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import bm25s

from repo_encoder.chunk import Chunk

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

TokenIds = Callable[[str], list[int]]
DecodeIds = Callable[[list[int]], str]


def code_terms(text: str) -> list[str]:
    """BM25 terms of source text: every identifier and number, lower-cased, plus the parts of
    snake_case and CamelCase identifiers (`compute_flux_ratio` -> itself, compute, flux, ratio),
    so a prompt naming `FluxRatioError` also finds code about `flux_ratio`."""
    terms: list[str] = []
    for word in _IDENTIFIER.findall(text):
        terms.append(word.lower())
        parts = [p.lower() for piece in word.split("_") for p in _CAMEL.findall(piece)]
        if len(parts) > 1:
            terms.extend(parts)
    return terms


class ChunkRetriever:
    """A BM25 index over one snapshot's chunks."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._index: bm25s.BM25 | None = None
        if self.chunks:
            self._index = bm25s.BM25()
            self._index.index([code_terms(c.text) for c in self.chunks], show_progress=False)

    def ranked(self, query: str) -> list[int]:
        """Indices of the chunks sharing at least one term with `query`, best first (ties in
        chunk order, so the ranking is deterministic)."""
        terms = code_terms(query)
        if self._index is None or not terms:
            return []
        scores = self._index.get_scores(terms)
        order = sorted(range(len(self.chunks)), key=lambda i: (-float(scores[i]), i))
        return [i for i in order if scores[i] > 0]


@dataclass(frozen=True)
class RagPrompt:
    """A prompt with retrieved context in front. Token counts are of the parts as tokenized
    separately; `retrieved_tokens` is what retrieval added over the bare prefix."""

    text: str
    retrieved_tokens: int
    prefix_tokens: int
    chunks: list[str] = field(default_factory=list)  # "path:qualname" of what was placed


def render_chunk(chunk: Chunk) -> str:
    """A retrieved chunk as placed in the prompt: a comment naming its file, then its text."""
    return f"# {chunk.path}\n{chunk.text.rstrip()}\n\n"


def rag_prompt(
    prefix: str,
    retriever: ChunkRetriever,
    token_ids: TokenIds,
    decode: DecodeIds,
    budget: int,
    top_k: int,
    max_retrieved_tokens: int,
) -> RagPrompt:
    """Up to `top_k` of the best chunks for `prefix` (each whole; one that does not fit the
    remaining retrieval allowance is passed over), then the prefix cut from the front so that
    the two together stay within `budget` tokens."""
    allowance = min(max_retrieved_tokens, budget)
    placed: list[str] = []
    names: list[str] = []
    used = 0
    for i in retriever.ranked(prefix):
        if len(placed) == top_k:
            break
        text = render_chunk(retriever.chunks[i])
        n = len(token_ids(text))
        if used + n > allowance:
            continue
        placed.append(text)
        names.append(f"{retriever.chunks[i].path}:{retriever.chunks[i].qualname}")
        used += n
    ids = token_ids(prefix)
    keep = max(0, budget - used)
    cut = prefix if len(ids) <= keep else decode(ids[len(ids) - keep :])
    return RagPrompt("".join(placed) + cut, used, min(len(ids), keep), names)
