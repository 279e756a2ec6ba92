"""The LoRA shape every generator, trainer and baseline starts from, in one place: the rank,
and alpha as a multiple of it (so the scale alpha / rank stays the same at any rank)."""

from __future__ import annotations

DEFAULT_RANK = 8
ALPHA_PER_RANK = 2


def default_alpha(rank: int) -> int:
    """The LoRA alpha for `rank` (scale alpha / rank = `ALPHA_PER_RANK`)."""
    return ALPHA_PER_RANK * rank


DEFAULT_ALPHA = default_alpha(DEFAULT_RANK)
