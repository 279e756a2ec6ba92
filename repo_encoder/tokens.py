"""The token estimate used where no tokenizer is at hand: it budgets a chunk (the chunker) and
a task's prompt prefix (the miner). UTF-8 bytes / 4, rounded up: about what a code BPE
tokenizer gives on English-named Python."""

from __future__ import annotations

BYTES_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate: UTF-8 bytes / 4, rounded up."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)
