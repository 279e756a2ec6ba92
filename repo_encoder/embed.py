"""Chunk vectors from a frozen causal LM: mean-pooled hidden states of one layer, batched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class EmbedConfig:
    """How chunk text becomes a vector. `layer` indexes `hidden_states` (0 = embeddings,
    -1 = last layer); texts longer than `max_tokens` are truncated."""

    layer: int = -1
    max_tokens: int = 512
    batch_size: int = 16
    gpu_batch_size: int = 64  # on a GPU, where a wider batch is nearly free


@torch.no_grad()
def embed_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    config: EmbedConfig = EmbedConfig(),
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Vectors [len(texts), hidden] (float32, CPU) in the order of `texts`.

    Texts are batched by length so padding stays small; `on_batch(n)` is called after each
    batch with the number of texts it held (for progress bars)."""
    hidden = int(model.config.hidden_size)
    out = torch.empty(len(texts), hidden, dtype=torch.float32)
    if not texts:
        return out
    device = next(model.parameters()).device
    batch_size = config.gpu_batch_size if device.type == "cuda" else config.batch_size
    # the decoder alone: the LM head's logits (vocabulary-wide, per token) are never needed
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model
    enc = tokenizer(
        list(texts), add_special_tokens=False, truncation=True, max_length=config.max_tokens
    )["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        longest = max(1, max(len(enc[i]) for i in idx))
        ids = torch.full((len(idx), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), longest), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = enc[i] or [pad_id]  # an empty chunk still gets a (padding) vector
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        res = backbone(
            input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
        )
        h = res.hidden_states[config.layer].float()  # [b, t, hidden]
        m = mask.to(device).unsqueeze(-1).float()  # [b, t, 1]
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # [b, hidden]
        out[torch.tensor(idx)] = pooled.cpu()
        if on_batch is not None:
            on_batch(len(idx))
    return out
