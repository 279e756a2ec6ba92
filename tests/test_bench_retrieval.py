"""The retrieval baseline: BM25 finds the chunk that shares the prompt's identifiers, and the
retrieved context plus the cut prefix stay within the same token budget as every method."""

from __future__ import annotations

from benchmark.retrieval import ChunkRetriever, code_terms, rag_prompt, render_chunk
from repo_encoder.chunk import Chunk, content_hash


def _chunk(path: str, qualname: str, text: str) -> Chunk:
    return Chunk(path, qualname, "function", 1, text.count("\n") + 1, text, content_hash(text))


CHUNKS = [
    _chunk("pkg/a.py", "resolve_flux_ratio", "def resolve_flux_ratio(v):\n    return v * FLUX\n"),
    _chunk("pkg/b.py", "MeadowKeeper", "class MeadowKeeper:\n    def add_amount(self, a): ...\n"),
    _chunk("pkg/c.py", "<module>", "LIMIT = 3\nSPAN = 7\n" * 40),  # big: over any allowance
    _chunk("pkg/d.py", "tally_opal", "def tally_opal(xs):\n    return sum(xs) % SPAN\n"),
]


def _tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))  # a byte tokenizer, like tiny-random's


def _decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def test_code_terms_split_identifiers() -> None:
    terms = code_terms("assert resolve_flux_ratio(3) == FluxRatioError")
    assert {"resolve_flux_ratio", "resolve", "flux", "ratio", "3"} <= set(terms)
    assert {"fluxratioerror", "error"} <= set(terms)


def test_bm25_ranks_the_chunk_sharing_identifiers_first() -> None:
    retriever = ChunkRetriever(CHUNKS)
    assert retriever.ranked("def test_x():\n    assert resolve_flux_ratio(2) == ")[0] == 0
    assert retriever.ranked("keeper = MeadowKeeper()")[0] == 1
    assert retriever.ranked("nothing in common") == []
    assert ChunkRetriever([]).ranked("resolve_flux_ratio") == []


def test_rag_prompt_stays_within_the_budget_and_counts_retrieved_tokens() -> None:
    retriever = ChunkRetriever(CHUNKS)
    prefix = "import pkg\n" * 30 + "def test_x():\n    assert tally_opal([1, 2]) + SPAN == "
    budget = 200
    rp = rag_prompt(prefix, retriever, _tokens, _decode, budget, top_k=4, max_retrieved_tokens=100)
    assert len(_tokens(rp.text)) <= budget
    # only what fits the 100-token allowance was placed (the big module chunk was passed over)
    assert "pkg/c.py:<module>" not in rp.chunks and rp.chunks[0] == "pkg/d.py:tally_opal"
    placed = "".join(render_chunk(c) for c in CHUNKS if f"{c.path}:{c.qualname}" in rp.chunks)
    assert rp.retrieved_tokens == len(_tokens(placed)) <= 100
    assert rp.text.startswith(placed)
    # the prefix was cut from the front: its end, next to the target, is kept
    assert rp.text.endswith("assert tally_opal([1, 2]) + SPAN == ")
    assert rp.prefix_tokens == budget - rp.retrieved_tokens


def test_rag_prompt_respects_top_k_and_short_prefixes() -> None:
    retriever = ChunkRetriever(CHUNKS)
    prefix = "assert resolve_flux_ratio(1) + tally_opal([]) == "
    rp = rag_prompt(prefix, retriever, _tokens, _decode, 1000, top_k=1, max_retrieved_tokens=500)
    assert len(rp.chunks) == 1
    assert rp.text.endswith(prefix) and rp.prefix_tokens == len(_tokens(prefix))
    none = rag_prompt(prefix, ChunkRetriever([]), _tokens, _decode, 1000, 4, 500)
    assert none.text == prefix and none.retrieved_tokens == 0
