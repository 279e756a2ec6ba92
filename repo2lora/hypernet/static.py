"""Code2LoRA-Static: a set of chunk vectors -> pooled repository state -> LoRA A/B for every
(layer, target module). The state -> LoRA head is shared with the evolving variant."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from repo2lora.adapters.defaults import DEFAULT_ALPHA, DEFAULT_RANK
from repo2lora.adapters.functional import BatchedLora, batched_to_weights
from repo2lora.adapters.targets import DEFAULT_TARGETS, LoraTarget, module_shapes, param_key
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.config import JsonConfig
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.protocol import SnapshotInput, describe_generator
from repo_encoder.errors import UserError


@dataclass(frozen=True)
class HypernetConfig(JsonConfig):
    """Settings of a static hypernetwork. `layer_conditioning="embedding"` gives every layer its
    own A/B through learned layer/module embeddings (Text-to-LoRA style); `"shared"` gives one
    pair per module type shared by all layers (Code2LoRA style)."""

    input_dim: int  # chunk vector size (the base model's hidden size)
    # code2lora-evo adds the GRU step on top of everything code2lora-static has, and
    # code2lora-names a names memory on the LM head on top of everything code2lora-evo has
    generator: Literal["code2lora-static", "code2lora-evo", "code2lora-names"] = "code2lora-evo"
    diff_hidden: int = 256
    rank: int = DEFAULT_RANK
    alpha: int = DEFAULT_ALPHA
    # the choice (`targets.choose_target_modules`); a built generator records the module types
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    pooling: Literal["attention", "meanmax"] = "attention"
    num_queries: int = 4
    attn_dim: int = 64
    state_dim: int = 256  # the repository state; the evolving GRU uses the same size
    head_dim: int = 256
    cond_dim: int = 32
    layer_conditioning: Literal["embedding", "shared"] = "embedding"
    # B starts bounded by this; with A bounded by tanh too, an untrained hypernetwork's adapter
    # barely moves the base model. The bound is learned (in log space) during training.
    b_init_bound: float = 1e-3
    # Centre and scale chunk vectors with statistics of the training corpus (stored in the
    # checkpoint). Raw vectors of every repository share one dominant direction (mean cosine
    # 0.97-0.99 between repositories), which the state otherwise collapses onto.
    standardize: bool = False
    # code2lora-names only (`hypernet.name_memory`): the LM head pair's rank (the most distinct
    # tokens it can raise), the most names it holds, the longest spelling it follows (tokens),
    # and the rank of its learned key maps
    names_rank: int = 64
    names_max: int = 48
    names_tokens: int = 24
    names_key_rank: int = 32
    # the most one entry of the names memory adds to a token's logit (nats, at a typical last
    # hidden state): a confident wrong name costs at most about this much NLL
    names_max_boost: float = 32.0
    # how the memory picks the names it holds: "score", best learned score first; "prior",
    # exceptions first, then every name by how many chunks mention it (the learned score then
    # only weighs them: `name_memory.NameMemory.select`)
    names_select: Literal["score", "prior"] = "score"
    # how many of a name's uses in the code the memory reads (the base model's state before
    # each becomes part of its first token's key); 0: none (the memory of older checkpoints)
    names_contexts: int = 0
    seed: int = 0


class SetEncoder(nn.Module):
    """Chunk vectors [b, n, d_in] (mask [b, n]) -> repository state [b, state_dim]."""

    input_mean: torch.Tensor  # buffers [d_in], present with `standardize`
    input_scale: torch.Tensor

    def __init__(self, cfg: HypernetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.input_dim)
        if cfg.standardize:
            self.register_buffer("input_mean", torch.zeros(cfg.input_dim))
            self.register_buffer("input_scale", torch.ones(cfg.input_dim))
        if cfg.pooling == "attention":
            self.queries = nn.Parameter(torch.randn(cfg.num_queries, cfg.attn_dim) * 0.02)
            self.key = nn.Linear(cfg.input_dim, cfg.attn_dim)
            pooled = cfg.num_queries * cfg.input_dim
        else:
            pooled = 2 * cfg.input_dim
        self.trunk = nn.Sequential(
            nn.Linear(pooled, cfg.state_dim),
            nn.GELU(),
            nn.Linear(cfg.state_dim, cfg.state_dim),
            nn.LayerNorm(cfg.state_dim),
        )

    def standardized(self, vectors: torch.Tensor) -> torch.Tensor:
        """Chunk vectors [..., d] in the units the encoder reads (unchanged without
        `standardize`)."""
        if not self.cfg.standardize:
            return vectors
        return (vectors - self.input_mean) / self.input_scale

    @torch.no_grad()
    def fit_standardization(self, vectors: torch.Tensor) -> None:
        """Per-dimension mean and standard deviation of a corpus of chunk vectors [n, d]."""
        if not self.cfg.standardize or vectors.shape[0] < 2:
            return
        self.input_mean.copy_(vectors.mean(0))
        self.input_scale.copy_(vectors.std(0).clamp(min=1e-6))

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vectors = self.standardized(vectors)
        b, n, _ = vectors.shape
        if n == 0:  # an empty repository still has a (learned-bias) state
            vectors = vectors.new_zeros(b, 1, self.cfg.input_dim)
            mask = mask.new_zeros(b, 1)
        x = self.norm(vectors)  # [b, n, d]
        m = mask.bool()
        any_valid = m.any(dim=1, keepdim=True)  # [b, 1]
        if self.cfg.pooling == "attention":
            keys = self.key(x)  # [b, n, a]
            scores = torch.einsum("qa,bna->bqn", self.queries, keys) / math.sqrt(keys.shape[-1])
            scores = scores.masked_fill(~m[:, None, :], float("-inf"))
            weights = torch.softmax(scores, dim=-1)  # [b, q, n]
            weights = torch.where(any_valid[:, :, None], weights, torch.zeros_like(weights))
            pooled = torch.einsum("bqn,bnd->bqd", weights, x).reshape(b, -1)  # [b, q*d]
        else:
            mf = m.unsqueeze(-1).to(x.dtype)  # [b, n, 1]
            mean = (x * mf).sum(1) / mf.sum(1).clamp(min=1.0)
            mx = x.masked_fill(~m.unsqueeze(-1), float("-inf")).amax(1)
            mx = torch.where(any_valid, mx, torch.zeros_like(mx))
            pooled = torch.cat([mean, mx], dim=-1)  # [b, 2d]
        return self.trunk(pooled)  # [b, state_dim]


class LoraHead(nn.Module):
    """Repository state [b, state_dim] -> A [b, L, r, in] and B [b, L, out, r] per module type."""

    def __init__(self, cfg: HypernetConfig, targets: list[LoraTarget]) -> None:
        super().__init__()
        self.cfg = cfg
        self.targets = targets
        self.module_types = sorted({t.module_type for t in targets})
        self.num_layers = max(t.layer for t in targets) + 1
        self.shapes = module_shapes(targets)
        self.type_emb = nn.Embedding(len(self.module_types), cfg.cond_dim)
        in_dim = cfg.state_dim + cfg.cond_dim
        if cfg.layer_conditioning == "embedding":
            self.layer_emb = nn.Embedding(self.num_layers, cfg.cond_dim)
            in_dim += cfg.cond_dim
        self.mixer = nn.Sequential(nn.Linear(in_dim, cfg.head_dim), nn.GELU())
        r = cfg.rank
        self.out = nn.ModuleDict(
            {
                param_key(mt): nn.Linear(cfg.head_dim, r * (fi + fo))
                for mt, (fi, fo) in self.shapes.items()
            }
        )
        self.log_b_bound = nn.Parameter(torch.tensor(math.log(cfg.b_init_bound)))

    def forward(self, state: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        b = state.shape[0]
        r = self.cfg.rank
        shared = self.cfg.layer_conditioning == "shared"
        n_l = 1 if shared else self.num_layers
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for ti, mt in enumerate(self.module_types):
            fi, fo = self.shapes[mt]
            parts = [state[:, None, :].expand(b, n_l, -1)]  # [b, L, s]
            t_emb = self.type_emb.weight[ti]
            parts.append(t_emb.expand(b, n_l, -1))
            if not shared:
                parts.append(self.layer_emb.weight[None, :, :].expand(b, -1, -1))
            h = self.mixer(torch.cat(parts, dim=-1))  # [b, L, head]
            raw = self.out[param_key(mt)](h)  # [b, L, r*(fi+fo)]
            a = torch.tanh(raw[..., : r * fi]).reshape(b, n_l, r, fi) / math.sqrt(fi)
            bb = torch.tanh(raw[..., r * fi :]).reshape(b, n_l, fo, r) * self.log_b_bound.exp()
            if shared:
                a = a.expand(b, self.num_layers, r, fi)
                bb = bb.expand(b, self.num_layers, fo, r)
            out[mt] = (a, bb)
        return out

    def to_lora_weights(
        self, batched: dict[str, tuple[torch.Tensor, torch.Tensor]], index: int = 0
    ) -> LoraWeights:
        """Sample `index` of a batched head output as an adapter keyed by module path."""
        return batched_to_weights(batched, self.targets, self.cfg.rank, self.cfg.alpha, index)


class StaticHypernet(nn.Module):
    """Code2LoRA-Static: `encode` a chunk-vector set to a state, `generate` LoRA from a state.
    The base of the vector-state family (evo, names); implements `protocol.Generator`."""

    generator_name = "code2lora-static"
    stateful = False  # no diff step: code2lora-evo adds it
    stores_state = True
    reads_names = False  # whether `generate` uses the repository's names (code2lora-names)
    reads_uses = False  # and the chunk texts where they are used (with names_contexts)
    reads_texts = False
    trainer = "code2lora"

    def __init__(self, cfg: HypernetConfig, targets: list[LoraTarget]) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.encoder = SetEncoder(cfg)
            self.head = LoraHead(cfg, targets)

    @property
    def device(self) -> torch.device:
        return self.head.log_b_bound.device

    def encode(self, vectors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[b, n, d_in] (or [n, d_in]) -> state [b, state_dim] (or [state_dim]), on the
        network's device."""
        single = vectors.dim() == 2
        vectors = vectors.to(self.device)
        if single:
            vectors = vectors[None]
        if mask is None:
            mask = torch.ones(vectors.shape[:2], dtype=torch.bool, device=self.device)
        state = self.encoder(vectors, mask.to(self.device))
        return state[0] if single else state

    def encode_snapshot(self, snapshot: SnapshotInput) -> torch.Tensor:
        """h_0 of a snapshot: its chunk vectors pooled [state_dim]."""
        if snapshot.vectors is None:
            raise ValueError(f"{self.generator_name} reads chunk vectors; none were given")
        return self.encode(snapshot.vectors)

    def step(
        self,
        h: torch.Tensor,
        brought_in: torch.Tensor,
        taken_out: torch.Tensor,
        counts: tuple[int, int, int],
    ) -> torch.Tensor:
        """A static hypernetwork has no diff step (`stateful` is False)."""
        raise UserError(
            f"a {self.generator_name} generator has no evolving state to follow history with; "
            "use a code2lora-evo checkpoint"
        )

    def name_probe(self, base_model: Any, tokenizer: Any) -> NameProbe | None:
        """The probe the names memory reads through (None: this generator reads no names)."""
        if not self.reads_names:
            return None
        return NameProbe(base_model, tokenizer, self.cfg.names_tokens)

    def names_parameters(self) -> list[nn.Parameter]:
        """The names memory's parameters (none here), which training gives their own rate."""
        return []

    def describe(self) -> dict[str, object]:
        return describe_generator(self)

    def generate(self, state: torch.Tensor, names: NameInput | None = None) -> LoraWeights:
        """One repository's adapter from its state [state_dim] (`names`: for generators that
        read them; ignored here)."""
        return self.head.to_lora_weights(self.head(state[None]), 0)

    def batched_lora(
        self, states: torch.Tensor, names: Sequence[NameInput | None] | None = None
    ) -> tuple[BatchedLora, list[LoraTarget]]:
        """The batch's LoRA from states [b, state_dim] and the targets it covers (what training
        applies with `functional_lora`)."""
        return self.head(states), self.head.targets

    def forward(
        self, vectors: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return self.head(self.encoder(vectors, mask))
