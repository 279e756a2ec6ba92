"""SHINE-style generator: the frozen base LM itself reads the repository (chunk texts) with
learned memory tokens appended and a small trainable meta-LoRA active; the memory tokens'
hidden states at every layer are mapped by a small axial transformer (attention across the
memory tokens of a layer, then across layers) to that layer's LoRA A/B.

Trainable: the memory embeddings, the meta-LoRA and the mapper. The base model is an argument
of `forward`, never a submodule: it is not trained and not saved with the generator."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from repo2lora.adapters.defaults import DEFAULT_ALPHA, DEFAULT_RANK
from repo2lora.adapters.functional import BatchedLora, batched_to_weights, functional_lora
from repo2lora.adapters.targets import DEFAULT_TARGETS, LoraTarget, module_shapes, param_key
from repo2lora.adapters.weights import LoraWeights
from repo2lora.hypernet.config import JsonConfig
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.protocol import SnapshotInput, describe_generator
from repo_encoder.chunk import Chunk
from repo_encoder.errors import UserError


@dataclass(frozen=True)
class ShineConfig(JsonConfig):
    """Settings of a SHINE-style generator."""

    input_dim: int  # the base model's hidden size (memory embeddings live in its input space)
    generator: Literal["shine"] = "shine"
    rank: int = DEFAULT_RANK
    alpha: int = DEFAULT_ALPHA
    # the choice (`targets.choose_target_modules`); a built generator records the module types
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    memory_tokens: int = 8
    # the meta-LoRA sits on the same target modules while the base model reads the context
    meta_rank: int = 4
    meta_alpha: int = 8
    mapper_dim: int = 128
    mapper_heads: int = 4
    mapper_blocks: int = 2
    context_tokens: int = 1024  # the repository text the base model reads, in tokens
    chunk_tokens: int = 256  # a chunk is cut to this, so one long chunk cannot fill the budget
    b_init_bound: float = 0.05  # B starts bounded by this (learned, like LoraHead's)
    seed: int = 0


# --- the repository context ------------------------------------------------------------------


def chunk_texts(chunks: list[Chunk]) -> list[str]:
    """What the reader sees of each chunk: its text headed by its file path, so the model
    knows which module defines what."""
    return [f"# {c.path}\n{c.text}" for c in chunks]


def chunk_token_ids(tokenizer: Any, texts: list[str], chunk_tokens: int) -> list[list[int]]:
    """Each chunk text as token ids, cut to `chunk_tokens`, ending in a newline token so
    packed chunks stay apart."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: chunk_tokens - len(newline)]
        out.append(ids + newline)
    return out


def pack_context(chunks: list[list[int]], budget: int, seed: int = 0) -> list[int]:
    """The context the base model reads: every chunk if they fit in `budget` tokens; otherwise
    the chunks a seeded shuffle picks until the budget is full, kept in repository order.
    Generation uses seed 0 (the same context every run); training draws a seed per step, so
    across steps the generator sees the whole repository."""
    if sum(len(c) for c in chunks) <= budget:
        return [t for c in chunks for t in c]
    order = list(range(len(chunks)))
    random.Random(seed).shuffle(order)
    picked, used = [], 0
    for i in order:
        if used + len(chunks[i]) <= budget:
            picked.append(i)
            used += len(chunks[i])
    return [t for i in sorted(picked) for t in chunks[i]]


# --- the generator ---------------------------------------------------------------------------


class MetaLora(nn.Module):
    """The trainable LoRA active inside the frozen base model while it reads the context:
    A [L, r, in] and B [L, out, r] per module type, B starting at zero (reading starts as the
    plain base model)."""

    def __init__(self, cfg: ShineConfig, targets: list[LoraTarget], num_layers: int) -> None:
        super().__init__()
        r = cfg.meta_rank
        self.scaling = cfg.meta_alpha / r
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        self.module_types = list(module_shapes(targets))
        for mt, (fi, fo) in module_shapes(targets).items():
            key = param_key(mt)
            self.a[key] = nn.Parameter((torch.rand(num_layers, r, fi) * 2 - 1) / math.sqrt(fi))
            self.b[key] = nn.Parameter(torch.zeros(num_layers, fo, r))

    def batched(self, b: int) -> BatchedLora:
        """The same meta-LoRA for each of `b` samples, in `functional_lora`'s layout."""
        return {
            mt: (
                self.a[param_key(mt)].expand(b, -1, -1, -1),
                self.b[param_key(mt)].expand(b, -1, -1, -1),
            )
            for mt in self.module_types
        }


class MemoryMapper(nn.Module):
    """Memory states [b, L, M, H] -> [b, L, M, D]: axial transformer blocks that attend across
    the M memory tokens of one layer, then across the L layers of one memory token."""

    def __init__(self, cfg: ShineConfig, num_layers: int) -> None:
        super().__init__()
        d = cfg.mapper_dim
        self.norm_in = nn.LayerNorm(cfg.input_dim)
        self.proj = nn.Linear(cfg.input_dim, d)
        self.layer_emb = nn.Parameter(torch.randn(num_layers, d) * 0.02)
        self.token_emb = nn.Parameter(torch.randn(cfg.memory_tokens, d) * 0.02)

        def block() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(
                d, cfg.mapper_heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True
            )

        self.across_tokens = nn.ModuleList(block() for _ in range(cfg.mapper_blocks))
        self.across_layers = nn.ModuleList(block() for _ in range(cfg.mapper_blocks))
        self.norm_out = nn.LayerNorm(d)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b, n_l, m, _ = states.shape
        x = self.proj(self.norm_in(states))  # [b, L, M, D]
        x = x + self.layer_emb[None, :, None, :] + self.token_emb[None, None, :, :]
        d = x.shape[-1]
        for tok_block, layer_block in zip(self.across_tokens, self.across_layers, strict=True):
            x = tok_block(x.reshape(b * n_l, m, d)).reshape(b, n_l, m, d)
            x = x.transpose(1, 2).reshape(b * m, n_l, d)  # [b*M, L, D]
            x = layer_block(x).reshape(b, m, n_l, d).transpose(1, 2)  # [b, L, M, D]
        return self.norm_out(x)


class LayerReadout(nn.Module):
    """Mapped memory [b, L, M, D] -> per module type A [b, L, r, in] and B [b, L, out, r].

    Layer l's adapter is read from layer l's memory only: per module type, 2r slots are learned
    mixtures of the M memory tokens; the first r slots become A's rows, the last r B's columns."""

    def __init__(self, cfg: ShineConfig, targets: list[LoraTarget]) -> None:
        super().__init__()
        self.rank = cfg.rank
        self.shapes = module_shapes(targets)
        d, r, m = cfg.mapper_dim, cfg.rank, cfg.memory_tokens
        self.slot_mix = nn.ParameterDict(
            {
                param_key(mt): nn.Parameter(torch.randn(2 * r, m) / math.sqrt(m))
                for mt in self.shapes
            }
        )
        self.slot_emb = nn.ParameterDict(
            {param_key(mt): nn.Parameter(torch.randn(2 * r, d) * 0.02) for mt in self.shapes}
        )

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, out))

        self.to_a = nn.ModuleDict({param_key(mt): mlp(fi) for mt, (fi, _) in self.shapes.items()})
        self.to_b = nn.ModuleDict({param_key(mt): mlp(fo) for mt, (_, fo) in self.shapes.items()})
        self.log_b_bound = nn.Parameter(torch.tensor(math.log(cfg.b_init_bound)))

    def forward(self, mem: torch.Tensor) -> BatchedLora:
        r = self.rank
        out: BatchedLora = {}
        for mt, (fi, _) in self.shapes.items():
            k = param_key(mt)
            slots = torch.einsum("sm,blmd->blsd", self.slot_mix[k], mem) + self.slot_emb[k]
            a = torch.tanh(self.to_a[k](slots[:, :, :r])) / math.sqrt(fi)  # [b, L, r, in]
            bb = torch.tanh(self.to_b[k](slots[:, :, r:])) * self.log_b_bound.exp()
            out[mt] = (a, bb.transpose(-1, -2))  # B [b, L, out, r]
        return out


class ShineGenerator(nn.Module):
    """Repository context (token ids) -> LoRA, reading it with the frozen base model;
    implements `protocol.Generator` (no vector state: one adapter per snapshot)."""

    generator_name = "shine"
    stateful = False
    stores_state = False
    reads_names = False
    reads_uses = False
    reads_texts = True
    trainer = "shine"

    def __init__(self, cfg: ShineConfig, targets: list[LoraTarget]) -> None:
        super().__init__()
        self.cfg = cfg
        self.targets = targets
        self.num_layers = max(t.layer for t in targets) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            # about unit norm per token, the scale of a typical input embedding
            self.memory = nn.Parameter(
                torch.randn(cfg.memory_tokens, cfg.input_dim) / math.sqrt(cfg.input_dim)
            )
            self.meta_lora = MetaLora(cfg, targets, self.num_layers)
            self.mapper = MemoryMapper(cfg, self.num_layers)
            self.readout = LayerReadout(cfg, targets)

    @property
    def scaling(self) -> float:
        return self.cfg.alpha / self.cfg.rank

    def read_memory(self, base_model: Any, contexts: list[list[int]]) -> torch.Tensor:
        """Run the base model (meta-LoRA active) over each context followed by the memory
        tokens; their hidden states after every layer [b, L, M, H]."""
        b, m = len(contexts), self.cfg.memory_tokens
        emb = base_model.get_input_embeddings()
        device = emb.weight.device
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        width = int(lengths.max()) + m
        ids = torch.zeros(b, width, dtype=torch.long, device=device)
        for i, c in enumerate(contexts):
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        pos = lengths[:, None] + torch.arange(m, device=device)  # [b, M]: right after the context
        x = emb(ids)  # [b, T, H]
        mem = self.memory.to(x.dtype)[None].expand(b, -1, -1)
        x = x.scatter(1, pos[:, :, None].expand(-1, -1, x.shape[-1]), mem)
        mask = (torch.arange(width, device=device)[None] < (lengths[:, None] + m)).long()
        decoder = base_model.get_decoder() if hasattr(base_model, "get_decoder") else base_model
        with functional_lora(
            base_model, self.targets, self.meta_lora.batched(b), self.meta_lora.scaling
        ):
            hidden = decoder(inputs_embeds=x, attention_mask=mask, output_hidden_states=True)
        layers = torch.stack(hidden.hidden_states[1 : self.num_layers + 1], dim=1)  # [b, L, T, H]
        idx = pos[:, None, :, None].expand(-1, layers.shape[1], -1, layers.shape[-1])
        return torch.gather(layers, 2, idx).float()  # [b, L, M, H]

    def forward(self, base_model: Any, contexts: list[list[int]]) -> BatchedLora:
        return self.readout(self.mapper(self.read_memory(base_model, contexts)))

    def encode_snapshot(self, snapshot: SnapshotInput) -> torch.Tensor:
        """The memory tokens' hidden states [L, M, H] after the base model read the snapshot's
        chunk texts, packed with seed 0 (the same context every run)."""
        if snapshot.base_model is None or snapshot.tokenizer is None:
            raise ValueError("shine reads the chunk texts with the base model; none was given")
        texts = chunk_texts(snapshot.chunks)
        ids = chunk_token_ids(snapshot.tokenizer, texts, self.cfg.chunk_tokens)
        context = pack_context(ids, self.cfg.context_tokens)
        return self.read_memory(snapshot.base_model, [context])[0]

    def step(
        self,
        h: torch.Tensor,
        brought_in: torch.Tensor,
        taken_out: torch.Tensor,
        counts: tuple[int, int, int],
    ) -> torch.Tensor:
        raise UserError("a shine generator has no evolving state to follow history with")

    def generate(self, state: torch.Tensor, names: NameInput | None = None) -> LoraWeights:
        """One repository's adapter from its memory states [L, M, H] (`encode_snapshot`)."""
        batched = self.readout(self.mapper(state[None]))
        return batched_to_weights(batched, self.targets, self.cfg.rank, self.cfg.alpha)

    def name_probe(self, base_model: Any, tokenizer: Any) -> NameProbe | None:
        return None

    def describe(self) -> dict[str, object]:
        return describe_generator(self)
