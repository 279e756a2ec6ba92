"""The static encoder's pooling kept as running sums, so a commit's chunk diff moves it exactly
at the cost of the diff ("static at every commit"): a repository's state at any commit equals
`SetEncoder` over a fresh snapshot of it, without reading the snapshot.

Each chunk is transformed on its own (standardised, layer-normed; for attention pooling also
scored against the queries), so the pooling is a function of a multiset of per-chunk terms:
* attention: per query q, pooled_q = sum_n exp(s_qn - M_q) x_n / sum_n exp(s_qn - M_q), kept as
  the numerator [q, d] and denominator [q] under a shift M_q (a stable log-sum-exp: raised, and
  the sums rescaled, when a chunk scores above it). Removing a chunk subtracts its terms;
  should that cancel most of a denominator (its precision gone), the sums are recomputed from
  the commit's chunks.
* meanmax: the sum [d] and count give the mean; the maximum [d] rises on additions, and a
  removed chunk that held a dimension's maximum makes that dimension, and only it, be
  recomputed from the commit's chunks (read only then: most diffs never touch a maximum).
The sums are float64 (removal by subtraction), the pooled vector float32 like the encoder's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from safetensors.torch import load, save

from repo2lora.hypernet.static import SetEncoder, StaticHypernet

# a removal that leaves less than this share of a denominator recomputes the sums
CANCELLATION = 1e-6


@dataclass
class PoolSums:
    """Running sums of one multiset of chunks: `count` chunks; attention: `shift` [q],
    `num` [q, d], `den` [q]; meanmax: `num` [1, d] (the sum), `maxima` [d] (-inf when empty)."""

    count: int
    num: torch.Tensor
    den: torch.Tensor
    shift: torch.Tensor
    maxima: torch.Tensor

    def to_bytes(self) -> bytes:
        tensors = {
            "count": torch.tensor([self.count], dtype=torch.int64),
            "num": self.num,
            "den": self.den,
            "shift": self.shift,
            "maxima": self.maxima,
        }
        return save({k: v.contiguous() for k, v in tensors.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> PoolSums:
        t = load(data)
        return cls(int(t["count"][0]), t["num"], t["den"], t["shift"], t["maxima"])


def set_encoder_of(net: object) -> SetEncoder:
    """The set encoder whose pooling the sums keep: a Code2LoRA network's (static, evolving or
    names); other generators have none."""
    if isinstance(net, StaticHypernet):
        return net.encoder
    raise ValueError(f"{type(net).__name__} has no Code2LoRA set encoder to keep sums of")


@torch.no_grad()
def chunk_terms(encoder: SetEncoder, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk terms of chunk vectors [n, d_in]: x [n, d] (what is pooled) and attention
    scores [q, n] (empty [0, n] for meanmax), float64."""
    p = next(encoder.parameters())
    v = vectors.to(device=p.device, dtype=p.dtype)
    x = encoder.norm(encoder.standardized(v))  # [n, d]
    if encoder.cfg.pooling != "attention":
        return x.double().cpu(), torch.zeros(0, x.shape[0], dtype=torch.float64)
    keys = encoder.key(x)  # [n, a]
    scores = (encoder.queries @ keys.T) / math.sqrt(keys.shape[-1])  # [q, n]
    return x.double().cpu(), scores.double().cpu()


def empty_sums(encoder: SetEncoder) -> PoolSums:
    d = encoder.cfg.input_dim
    q = encoder.cfg.num_queries if encoder.cfg.pooling == "attention" else 1
    f64 = torch.float64
    return PoolSums(
        0,
        torch.zeros(q, d, dtype=f64),
        torch.zeros(q, dtype=f64),
        torch.full((q,), -math.inf, dtype=f64),
        torch.full((d,), -math.inf, dtype=f64),
    )


def sums_of(encoder: SetEncoder, vectors: torch.Tensor) -> PoolSums:
    """The sums of a whole snapshot's chunk vectors [n, d_in] (a walk's start)."""
    return _add(encoder, empty_sums(encoder), *chunk_terms(encoder, vectors))


def _add(encoder: SetEncoder, s: PoolSums, x: torch.Tensor, scores: torch.Tensor) -> PoolSums:
    n = x.shape[0]
    if n == 0:
        return s
    if encoder.cfg.pooling == "attention":
        shift = torch.maximum(s.shift, scores.max(dim=1).values)  # [q]
        scale = torch.exp(s.shift - shift)  # 0 where the sums were empty (-inf shift)
        w = torch.exp(scores - shift[:, None])  # [q, n]
        return PoolSums(
            s.count + n, s.num * scale[:, None] + w @ x, s.den * scale + w.sum(1), shift, s.maxima
        )
    return PoolSums(
        s.count + n,
        s.num + x.sum(0, keepdim=True),
        s.den,
        s.shift,
        torch.maximum(s.maxima, x.max(0).values),
    )


def apply_diff(
    encoder: SetEncoder,
    s: PoolSums,
    brought_in: torch.Tensor,
    taken_out: torch.Tensor,
    members: Callable[[], torch.Tensor],
) -> PoolSums:
    """The sums after a chunk diff: `brought_in` [n_in, d_in] (added chunks, new sides of
    modified ones) and `taken_out` [n_out, d_in] (removed chunks, old sides). `members()` gives
    the chunk vectors after the diff [n, d_in]; it is called only when a removal took a
    maximum away or cancelled a denominator."""
    s = _add(encoder, s, *chunk_terms(encoder, brought_in))
    if taken_out.shape[0] == 0:
        return s
    x, scores = chunk_terms(encoder, taken_out)
    count = s.count - x.shape[0]
    if count <= 0:
        return empty_sums(encoder)
    if encoder.cfg.pooling == "attention":
        w = torch.exp(scores - s.shift[:, None])  # [q, n_out]
        den = s.den - w.sum(1)
        if bool((den < CANCELLATION * s.den).any()):
            return sums_of(encoder, members())
        return PoolSums(count, s.num - w @ x, den, s.shift, s.maxima)
    maxima = s.maxima.clone()
    lost = x.max(0).values >= maxima  # [d]: dimensions whose maximum may have left
    if bool(lost.any()):
        rest, _ = chunk_terms(encoder, members())
        maxima[lost] = rest[:, lost].max(0).values
    return PoolSums(count, s.num - x.sum(0, keepdim=True), s.den, s.shift, maxima)


def pooled(encoder: SetEncoder, s: PoolSums) -> torch.Tensor:
    """The pooled vector the encoder's trunk reads: [q * d] (attention) or [2d] (meanmax)."""
    if s.count == 0:
        width = s.num.numel() if encoder.cfg.pooling == "attention" else 2 * s.num.shape[1]
        return torch.zeros(width)
    if encoder.cfg.pooling == "attention":
        return (s.num / s.den[:, None]).reshape(-1).float()
    return torch.cat([s.num[0] / s.count, s.maxima]).float()


@torch.no_grad()
def state_of(encoder: SetEncoder, s: PoolSums) -> torch.Tensor:
    """The repository state [state_dim] of the sums: the encoder's trunk over `pooled`."""
    p = next(encoder.parameters())
    return encoder.trunk(pooled(encoder, s).to(device=p.device, dtype=p.dtype)[None])[0]
