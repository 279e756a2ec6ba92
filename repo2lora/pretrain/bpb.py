"""Bits per byte: the one number every pretraining report uses. A model's total NLL (nats) over
a fixed set of held-out documents, divided by their UTF-8 bytes and ln 2, so models with
different tokenizers compare on the same text; and xz's bits per byte on that text beside it.

Each document is `EOS + tokens`, the documents are concatenated in a fixed order and cut into
windows of `context + 1` tokens that overlap by one, so every token after the first is
predicted exactly once (the EOS separators included)."""

from __future__ import annotations

import lzma
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BpbResult:
    bits_per_byte: float
    nats: float
    bytes: int
    tokens: int
    documents: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(1, self.tokens)


def sample_documents(texts: Iterable[tuple[str, str]], max_bytes: int, seed: int = 0) -> list[str]:
    """A fixed, seeded sample of (distribution, text) documents up to `max_bytes` UTF-8 bytes,
    taken round-robin over distributions so one large distribution does not fill it."""
    by_dist: dict[str, list[str]] = {}
    for dist, text in texts:
        by_dist.setdefault(dist, []).append(text)
    rng = random.Random(seed)
    queues = []
    for dist in sorted(by_dist):
        docs = by_dist[dist]
        rng.shuffle(docs)
        queues.append(docs)
    out: list[str] = []
    used = 0
    while used < max_bytes and any(queues):
        for q in queues:
            if q and used < max_bytes:
                t = q.pop()
                out.append(t)
                used += len(t.encode())
    return out


def xz_bits_per_byte(docs: Sequence[str]) -> float:
    data = "\n".join(docs).encode()
    packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    return 8 * len(packed) / max(1, len(data))


@torch.no_grad()
def bits_per_byte(
    model: Any,
    tokenizer: Any,
    docs: Sequence[str],
    context: int = 512,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> BpbResult:
    """Total NLL of `docs` under `model`, in bits per UTF-8 byte."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for i in range(0, len(docs), 64):
        enc = tokenizer(list(docs[i : i + 64]), add_special_tokens=False)["input_ids"]
        for ids in enc:
            stream.append(eos)
            stream.extend(ids)
    n_bytes = sum(len(d.encode()) for d in docs)
    windows = [stream[s : s + context + 1] for s in range(0, len(stream) - 1, context)]
    was_training = model.training
    model.eval()
    nats = 0.0
    predicted = 0
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        width = max(len(w) for w in group)
        x = torch.full((len(group), width), eos, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.bool)
        for j, w in enumerate(group):
            x[j, : len(w)] = torch.tensor(w)
            mask[j, 1 : len(w)] = True
        x, mask = x.to(dev), mask.to(dev)
        logits = model(input_ids=x[:, :-1]).logits.float()  # (B, T, V)
        logp = torch.log_softmax(logits, dim=-1)
        tok = torch.gather(logp, 2, x[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T)
        m = mask[:, 1:]
        nats -= float(tok[m].sum())
        predicted += int(m.sum())
    if was_training:
        model.train()
    return BpbResult(
        bits_per_byte=nats / max(1, n_bytes) / math.log(2),
        nats=nats,
        bytes=n_bytes,
        tokens=predicted,
        documents=len(docs),
    )
