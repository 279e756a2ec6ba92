"""DnD-style generator (Drag-and-Drop LLMs): a batch of unlabelled prompts, embedded by a frozen
text encoder (here: the base model's pooled chunk vectors the project already caches) -> a
cascaded hyper-convolutional decoder -> tokenized LoRA weights. Trained by MSE against LoRA
checkpoints collected along per-repository LoRA training, never on the LM loss.

A LoRA is tokenized by rank component: for every target (layer, module), its r rows of A
(length `in`) and r columns of B (length `out`) are tokens, zero-padded to one token width; the
padded positions are masked in the loss. Tokens are predicted as residuals from the collection's
mean checkpoint, in units of each tensor's size (both fitted once from the collection and saved
with the generator as buffers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from repo2lora.adapters.defaults import DEFAULT_ALPHA, DEFAULT_RANK
from repo2lora.adapters.functional import BatchedLora, batched_to_weights
from repo2lora.adapters.targets import DEFAULT_TARGETS, LoraTarget
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.config import JsonConfig
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.protocol import SnapshotInput, describe_generator
from repo_encoder.errors import UserError


@dataclass(frozen=True)
class DndConfig(JsonConfig):
    """Settings of a DnD-style generator."""

    input_dim: int  # prompt vector size (the base model's hidden size)
    generator: Literal["dnd"] = "dnd"
    rank: int = DEFAULT_RANK
    alpha: int = DEFAULT_ALPHA
    # the choice (`targets.choose_target_modules`); a built generator records the module types
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    num_prompts: int = 32  # prompts per condition: the channels of the first decoder stage
    channels: tuple[int, ...] = (64, 128)  # between the prompt axis and the weight-token axis
    widths: tuple[int, ...] = (128, 128)  # between the prompt width and the token width
    kernel: int = 5
    seed: int = 0


def select_prompts(
    vectors: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`n` prompt vectors [n, d] from a repository's [k, d]. Without a generator: evenly spaced
    in repository order (the same every run; repeats when k < n). With one: a random draw, as
    training pairs each checkpoint with fresh prompt batches."""
    k = vectors.shape[0]
    if k == 0:
        return vectors.new_zeros(n, vectors.shape[1])
    if generator is None:
        idx = torch.arange(n) * k // n
    else:
        reps = -(-n // k)
        idx = torch.cat([torch.randperm(k, generator=generator) for _ in range(reps)])[:n]
    return vectors[idx]


class LoraTokenizer:
    """LoraWeights <-> tokens [T, D]: per target, r tokens of A rows, then r of B columns."""

    def __init__(self, targets: list[LoraTarget], rank: int) -> None:
        self.targets = targets
        self.rank = rank
        self.num_tokens = 2 * rank * len(targets)
        self.token_dim = max(max(t.in_features, t.out_features) for t in targets)
        self.mask = torch.zeros(self.num_tokens, self.token_dim, dtype=torch.bool)
        self.group = torch.zeros(self.num_tokens, dtype=torch.long)  # one group per tensor
        self.layers = max(t.layer for t in targets) + 1
        self.shapes: dict[str, tuple[int, int]] = {}
        a_index: dict[str, list[list[int]]] = {}
        b_index: dict[str, list[list[int]]] = {}
        for i, t in enumerate(targets):
            start = 2 * rank * i
            self.mask[start : start + rank, : t.in_features] = True
            self.mask[start + rank : start + 2 * rank, : t.out_features] = True
            self.group[start : start + rank] = 2 * i
            self.group[start + rank : start + 2 * rank] = 2 * i + 1
            self.shapes[t.module_type] = (t.in_features, t.out_features)
            a_index.setdefault(t.module_type, [[] for _ in range(self.layers)])
            b_index.setdefault(t.module_type, [[] for _ in range(self.layers)])
            a_index[t.module_type][t.layer] = list(range(start, start + rank))
            b_index[t.module_type][t.layer] = list(range(start + rank, start + 2 * rank))
        self.a_index = {mt: torch.tensor(v) for mt, v in a_index.items()}  # [L, r]
        self.b_index = {mt: torch.tensor(v) for mt, v in b_index.items()}

    def tokens(self, weights: LoraWeights) -> torch.Tensor:
        """One adapter as tokens [T, D] (zeros in padded positions)."""
        out = torch.zeros(self.num_tokens, self.token_dim)
        r = self.rank
        for i, t in enumerate(self.targets):
            a, b = weights.tensors[t.path]  # [r, in], [out, r]
            start = 2 * r * i
            out[start : start + r, : t.in_features] = a.float()
            out[start + r : start + 2 * r, : t.out_features] = b.float().T
        return out

    def batched(self, tokens: torch.Tensor) -> BatchedLora:
        """Tokens [b, T, D] -> per module type A [b, L, r, in] and B [b, L, out, r]."""
        out: BatchedLora = {}
        for mt, (fi, fo) in self.shapes.items():
            a = tokens[:, self.a_index[mt].to(tokens.device)][..., :fi]  # [b, L, r, in]
            b = tokens[:, self.b_index[mt].to(tokens.device)][..., :fo]  # [b, L, r, out]
            out[mt] = (a, b.transpose(-1, -2))
        return out


class HyperConvBlock(nn.Module):
    """[b, c_in, w_in] -> [b, c_out, w_out]: a depthwise convolution along the feature axis, a
    1x1 convolution across channels (the prompt axis turning, stage by stage, into the
    weight-token axis) and a linear map of the feature axis."""

    def __init__(self, c_in: int, c_out: int, w_in: int, w_out: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(w_in)
        self.feature_conv = nn.Conv1d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in)
        self.channel_conv = nn.Conv1d(c_in, c_out, 1)
        self.resize = nn.Linear(w_in, w_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h = h + self.feature_conv(h)
        return self.resize(self.channel_conv(h))  # [b, c_out, w_out]


class DndGenerator(nn.Module):
    """Prompt vectors [N, d] -> LoRA. `encode` picks the prompts from a repository's chunk
    vectors; `generate` decodes them; `predict_tokens` is what training fits. Implements
    `protocol.Generator` (no vector state: one adapter per snapshot)."""

    generator_name = "dnd"
    stateful = False
    stores_state = False
    reads_names = False
    reads_uses = False
    reads_texts = False
    trainer = "dnd"
    token_mean: torch.Tensor  # buffers: [T, D], [T, 1], [T, D] bool
    token_scale: torch.Tensor
    token_mask: torch.Tensor

    def __init__(self, cfg: DndConfig, targets: list[LoraTarget]) -> None:
        super().__init__()
        self.cfg = cfg
        self.targets = targets
        self.lora_tokens = LoraTokenizer(targets, cfg.rank)
        t, d = self.lora_tokens.num_tokens, self.lora_tokens.token_dim
        self.register_buffer("token_mean", torch.zeros(t, d))
        self.register_buffer("token_scale", torch.ones(t, 1))
        self.register_buffer("token_mask", self.lora_tokens.mask.clone(), persistent=False)
        chans = (cfg.num_prompts, *cfg.channels, t)
        widths = (cfg.input_dim, *cfg.widths, d)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.norm_in = nn.LayerNorm(cfg.input_dim)
            self.blocks = nn.ModuleList(
                HyperConvBlock(chans[i], chans[i + 1], widths[i], widths[i + 1], cfg.kernel)
                for i in range(len(chans) - 1)
            )

    @property
    def scaling(self) -> float:
        return self.cfg.alpha / self.cfg.rank

    @torch.no_grad()
    def fit_normalization(self, tokens: torch.Tensor) -> None:
        """Mean [T, D] and per-tensor scale [T, 1] from a collection of tokenized checkpoints
        [n, T, D]: the scale is the tensor's RMS, so a tensor that barely moves in training
        (A, from its shared init) costs little loss when its small changes are missed."""
        mean = tokens.mean(0)
        group = self.lora_tokens.group
        mask = self.lora_tokens.mask
        scale = torch.ones(tokens.shape[1], 1)
        for g in range(int(group.max()) + 1):
            rows = group == g
            vals = tokens[:, rows][:, mask[rows]]
            scale[rows] = vals.pow(2).mean().sqrt().clamp(min=1e-8)
        self.token_mean.copy_(mean * mask)
        self.token_scale.copy_(scale)

    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [..., T, D] in the units the decoder predicts (padded positions zero)."""
        return (tokens - self.token_mean) / self.token_scale * self.token_mask

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """A repository's chunk vectors [k, d] -> its condition [N, d] (deterministic)."""
        return select_prompts(vectors, self.cfg.num_prompts)

    def predict_tokens(self, prompts: torch.Tensor) -> torch.Tensor:
        """Prompts [b, N, d] -> normalized LoRA tokens [b, T, D]."""
        h = self.norm_in(prompts)
        for i, block in enumerate(self.blocks):
            y = block(h)
            if i < len(self.blocks) - 1:
                y = F.gelu(y)
                if y.shape == h.shape:
                    y = y + h
            h = y
        return h * self.token_mask

    def forward(self, prompts: torch.Tensor) -> BatchedLora:
        tokens = self.predict_tokens(prompts) * self.token_scale + self.token_mean
        return self.lora_tokens.batched(tokens * self.token_mask)

    def encode_snapshot(self, snapshot: SnapshotInput) -> torch.Tensor:
        """A snapshot's condition [N, d]: prompts picked from its chunk vectors, on the
        generator's device."""
        if snapshot.vectors is None:
            raise ValueError("dnd reads chunk vectors; none were given")
        return self.encode(snapshot.vectors).to(self.token_mean.device)

    def step(
        self,
        h: torch.Tensor,
        brought_in: torch.Tensor,
        taken_out: torch.Tensor,
        counts: tuple[int, int, int],
    ) -> torch.Tensor:
        raise UserError("a dnd generator has no evolving state to follow history with")

    def generate(self, state: torch.Tensor, names: NameInput | None = None) -> LoraWeights:
        """One repository's adapter from its condition [N, d] (`encode_snapshot`)."""
        return batched_to_weights(self(state[None]), self.targets, self.cfg.rank, self.cfg.alpha)

    def name_probe(self, base_model: Any, tokenizer: Any) -> NameProbe | None:
        return None

    def describe(self) -> dict[str, object]:
        return describe_generator(self)
