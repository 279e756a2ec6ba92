"""What a hypernetwork training step costs on a given base model, from the model's shapes: the
peak memory of one process (the number `torch.cuda.max_memory_allocated` reports, which
`train_log.jsonl` logs beside it) and the floating-point operations of a step, hence its time
on a GPU at a stated utilisation. `python -m repo2lora.training.memory` prints it as JSON.

The formula, per process, with b examples of t = prompt + target tokens, k = target + 1
positions whose logits are computed, s bytes per activation element (2 in bf16, 4 in fp32),
L layers of hidden width h, a vocabulary of V, P base and P_h hypernetwork parameters:

  memory = weights + hypernetwork + generated LoRA + layers + logits + mask
  weights        = P * s                    the frozen base (cast to bf16 on GPUs)
  hypernetwork   = P_h * (16 + 4 [DDP])     float32 weights, gradients, Adam's two moments;
                                            DDP's gradient buckets with several processes
  generated LoRA = 4 * s * b * L * sum_targets r * (in + out)
                                            each sample's A and B, the head's outputs they are
                                            read from, and their gradients
  layers         = b * t * (L * h * s + 2 * a)   with activation checkpointing: each layer's
                                            input, plus one layer recomputed and its backward
                 = b * t * (L + 1) * a           without: every layer's saved activations
  logits         = b * k * V * (12 + s)     the LM head's outputs at the target positions, their
                                            float32 copy and log-softmax, and its gradient
  mask           = b * t * t * s            the padding-aware causal mask (shared by layers)

where a, the bytes a layer keeps for the backward pass per token (its weights are frozen, so a
projection's input is kept only where a LoRA reads it), is

  a = s * (2 * q + 2 * kv + 2 * kv') + 4 * H  attention: queries and output (width q), keys and
                                            values (width kv), and again as the kernel reads
                                            them (kv' = q where grouped-query heads are
                                            repeated to the H query heads, else kv), and the
                                            log-sum-exp
    + s * c * i                             MLP of width i: c = 3 gated (gate, up and their
                                            product's other factor), 4 for GPT-2's tanh GELU
                                            written as elementwise ops, 1 otherwise (the
                                            activation's input)
    + n * (4 * h + 8)                       n norms, computed in float32
    + s * (h [a LoRA on q/k/v] + h [on the MLP's input side] + i [on its output side]
           + r * targets)                   the inputs the LoRA pairs read that the frozen
                                            layer would not keep anyway, and B's inputs

with q and kv the query and key/value widths (heads * head_dim). Against the tensors autograd
keeps on a CPU (tests/test_byom.py), a is within 5% for Llama-style layers (RMSNorm, gated
MLP) and 20% for GPT-2, GPT-BigCode and GPT-NeoX ones. Not counted: the CUDA context and cuBLAS
workspaces (several hundred MB per process, outside the allocator's count) and allocator
fragmentation.

Time: a token costs 2 FLOPs per weight of the layers it passes forward, 2 more backward (frozen
weights: only the input gradients), 2 more to recompute with checkpointing, plus causal
attention (2 * t * q per layer forward, twice that backward, once more to recompute) and the
LM head at the k kept positions (2 * h * V forward, as much backward). Seconds = FLOPs / (the
GPU's dense bf16 peak * utilisation); the utilisation is an assumption (`--mfu`, default 0.3),
to be replaced by the one a run measures (its step time)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PretrainedConfig

from repo2lora.adapters.targets import (
    DEFAULT_TARGETS,
    LoraTarget,
    layer_blocks,
    layer_projections,
    select_targets,
    weightless_model,
)

GIB = 2**30
# dense bf16 peak TFLOPS (no sparsity), from the vendors' data sheets
GPU_PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "l40s": 362.0, "l4": 121.0}


@dataclass(frozen=True)
class ModelShapes:
    """The sizes of a causal LM the estimate reads (from a weightless instance)."""

    model_type: str
    params: int
    layers: int
    hidden: int
    vocab: int
    heads: int
    q_width: int  # heads * head_dim
    kv_width: int  # key/value heads * head_dim
    mlp_width: int
    mlp_factor: int  # c: MLP activations kept per unit of width
    norms_per_layer: int
    layer_weights: int  # weights of one layer's projections
    projections: tuple[LoraTarget, ...] = field(repr=False)  # of one layer


@dataclass(frozen=True)
class TrainShape:
    """One process's share of a training step, and how it runs."""

    batch: int  # examples per process
    prompt_tokens: int = 256
    target_tokens: int = 32
    rank: int = 8
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    precision: str = "bf16"  # of activations and the frozen weights: "bf16" or "fp32"
    checkpointing: bool = True
    processes: int = 1


# activations transformers writes as several elementwise ops, each keeping its inputs
_ELEMENTWISE_GELU = {"gelu_new", "gelu_fast", "gelu_python_tanh"}
# leaf names of the projection that maps the attention's output back to the hidden width
_ATTENTION_OUTPUT = {"o_proj", "c_proj", "dense", "out_proj", "wo", "out_lin"}


def _in_attention(t: LoraTarget) -> bool:
    return any("attn" in c or "attention" in c for c in t.path.lower().split(".")[:-1])


def model_shapes(config: PretrainedConfig) -> ModelShapes:
    """The shapes the estimate needs, read from the model `config` describes."""
    model = weightless_model(config)
    _, blocks = layer_blocks(model)
    layer0 = [t for t in layer_projections(model) if t.layer == 0]
    mlp = [t for t in layer0 if not _in_attention(t)]
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = getattr(config, "num_key_value_heads", None)
    if kv_heads is None:
        kv_heads = 1 if getattr(config, "multi_query", False) else heads
    mlp_width = max((t.in_features for t in mlp), default=4 * hidden)
    gated = len(mlp) >= 3 or any(t.out_features == 2 * mlp_width for t in mlp)
    act = str(getattr(config, "hidden_act", None) or getattr(config, "activation_function", ""))
    mlp_factor = 3 if gated else 4 if act in _ELEMENTWISE_GELU else 1
    norms = sum(1 for m in blocks[0].modules() if "norm" in type(m).__name__.lower())
    return ModelShapes(
        model_type=str(config.model_type),
        params=sum(p.numel() for p in model.parameters()),
        layers=len(blocks),
        hidden=hidden,
        vocab=int(config.vocab_size),
        heads=heads,
        q_width=heads * head_dim,
        kv_width=int(kv_heads) * head_dim,
        mlp_width=mlp_width,
        mlp_factor=mlp_factor,
        norms_per_layer=norms,
        layer_weights=sum(t.in_features * t.out_features for t in layer0),
        projections=tuple(layer0),
    )


def _targets_of(shapes: ModelShapes, target_modules: Sequence[str], config: Any) -> list[Any]:
    chosen = {t.module_type for t in select_targets(weightless_model(config), target_modules)}
    return [t for t in shapes.projections if t.module_type in chosen]


def layer_activation_bytes(
    shapes: ModelShapes, targets: Sequence[LoraTarget], rank: int, s: int
) -> float:
    """a: the bytes one layer keeps per token for the backward pass (module docstring)."""
    q, kv = shapes.q_width, shapes.kv_width
    read_kv = q if kv > q // shapes.heads else kv  # several key/value heads: repeated
    attention = s * (2 * q + 2 * kv + 2 * read_kv) + 4 * shapes.heads
    mlp = s * shapes.mlp_factor * shapes.mlp_width
    norms = shapes.norms_per_layer * (4 * shapes.hidden + 8)
    attn = [t for t in targets if _in_attention(t)]
    mlp_in = [t for t in targets if not _in_attention(t) and t.in_features != shapes.mlp_width]
    mlp_out = [t for t in targets if not _in_attention(t) and t.in_features == shapes.mlp_width]
    attn_in = [t for t in attn if t.module_type.split(".")[-1].lower() not in _ATTENTION_OUTPUT]
    kept = shapes.hidden * (bool(attn_in) + bool(mlp_in)) + shapes.mlp_width * bool(mlp_out)
    lora = s * (kept + rank * len(targets))
    return float(attention + mlp + norms + lora)


def estimate_training(
    config: PretrainedConfig,
    shape: TrainShape,
    hypernet_params: int | None = None,
    gpu: str = "h100",
    mfu: float = 0.3,
) -> dict[str, Any]:
    """Peak memory (bytes, by term) and FLOPs of one training step of one process; seconds at
    `mfu` of `gpu`'s peak. Without `hypernet_params`, the default code2lora hypernetwork for
    these targets is counted."""
    shapes = model_shapes(config)
    s = 2 if shape.precision == "bf16" else 4
    b, t = shape.batch, shape.prompt_tokens + shape.target_tokens
    k = shape.target_tokens + 1
    r, n_l, h = shape.rank, shapes.layers, shapes.hidden
    targets = _targets_of(shapes, shape.target_modules, config)
    if hypernet_params is None:
        hypernet_params = default_hypernet_params(config, shape)
    a = layer_activation_bytes(shapes, targets, r, s)
    lora_elements = n_l * sum(r * (x.in_features + x.out_features) for x in targets)
    # checkpointing: each layer's input, plus one layer recomputed and its backward
    layers = b * t * (n_l * h * s + 2 * a) if shape.checkpointing else b * t * (n_l + 1) * a
    memory = {
        "weights": shapes.params * s,
        "hypernetwork": hypernet_params * (16 + (4 if shape.processes > 1 else 0)),
        "generated_lora": 4 * s * b * lora_elements,
        "layers": layers,
        "logits": b * k * shapes.vocab * (12 + s),
        "mask": b * t * t * s,
    }
    total = sum(memory.values())
    # per token and layer, forward: 2 per projection weight; causal attention over t/2 keys on
    # average, for scores and values: 2 * 2 * (t / 2) * q
    proj, attn = 2 * shapes.layer_weights, 2 * t * shapes.q_width
    recompute = 1 if shape.checkpointing else 0
    # backward: input gradients only for the frozen projections (1x), attention 2x
    step_flops = b * t * n_l * (proj * (2 + recompute) + attn * (3 + recompute))
    step_flops += b * k * 2 * h * shapes.vocab * 2  # LM head at k positions: forward, backward
    peak = GPU_PEAK_TFLOPS[gpu] * 1e12
    seconds = step_flops / (peak * mfu)
    return {
        "model": {k: v for k, v in asdict(shapes).items() if k != "projections"},
        "settings": {**asdict(shape), "hypernet_params": hypernet_params},
        "targets": sorted({x.module_type for x in targets}),
        "layer_activation_bytes_per_token": a,
        "memory_bytes": {**memory, "total": total},
        "memory_gib": round(total / GIB, 3),
        "step_flops": step_flops,
        "step_seconds": {"gpu": gpu, "mfu": mfu, "seconds": round(seconds, 4)},
        "tokens_per_s": round(b * t / seconds) if seconds else None,
    }


def default_hypernet_params(config: PretrainedConfig, shape: TrainShape) -> int:
    """Parameters of the code2lora hypernetwork `repo2lora train` builds for this model and
    these targets (counted on the meta device: nothing is allocated)."""
    from repo2lora.hypernet.static import HypernetConfig, StaticHypernet

    model = weightless_model(config)
    targets = select_targets(model, shape.target_modules)
    cfg = HypernetConfig(
        input_dim=int(config.hidden_size),
        generator="code2lora-static",
        rank=shape.rank,
        alpha=2 * shape.rank,
    )
    with torch.device("meta"):
        net = StaticHypernet(cfg, targets)
    return sum(p.numel() for p in net.parameters())


def encoding_estimate(
    config: PretrainedConfig, chunk_tokens: int, gpu: str = "h100", mfu: float = 0.3
) -> dict[str, Any]:
    """Chunk encoding of `chunk_tokens` repository tokens: the float32 weights it runs in, and
    its seconds (a forward pass: 2 FLOPs per weight per token)."""
    shapes = model_shapes(config)
    flops = 2 * chunk_tokens * (shapes.layers * shapes.layer_weights)
    return {
        "weights_bytes": shapes.params * 4,
        "flops": flops,
        "seconds": round(flops / (GPU_PEAK_TFLOPS[gpu] * 1e12 * mfu), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from repo2lora.adapters.targets import parse_target_modules
    from repo2lora.models.presets import REFERENCE_SHAPES, reference_config

    p = argparse.ArgumentParser(
        prog="python -m repo2lora.training.memory",
        description="Memory and time of one hypernetwork training step, from a model's shapes "
        "(JSON on stdout).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shape", choices=sorted(REFERENCE_SHAPES), help="a reference shape")
    src.add_argument("--model", help="a model directory, preset or hub id (its config only)")
    p.add_argument("--batch", type=int, default=8, help="examples per process per step")
    p.add_argument("--prompt-tokens", type=int, default=256)
    p.add_argument("--target-tokens", type=int, default=32)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--target-modules", default="attention")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--gpu", choices=sorted(GPU_PEAK_TFLOPS), default="h100")
    p.add_argument("--mfu", type=float, default=0.3, help="assumed utilisation of the peak")
    p.add_argument("--chunk-tokens", type=int, default=0, help="also estimate encoding these")
    args = p.parse_args(argv)
    if args.shape:
        config: PretrainedConfig = reference_config(args.shape)
    else:
        from repo2lora.models.loading import describe_base_model

        config = describe_base_model(args.model).config
    shape = TrainShape(
        batch=args.batch,
        prompt_tokens=args.prompt_tokens,
        target_tokens=args.target_tokens,
        rank=args.rank,
        target_modules=parse_target_modules(args.target_modules),
        precision=args.precision,
        checkpointing=not args.no_checkpointing,
        processes=args.processes,
    )
    out = estimate_training(config, shape, gpu=args.gpu, mfu=args.mfu)
    if args.chunk_tokens:
        out["encoding"] = encoding_estimate(config, args.chunk_tokens, args.gpu, args.mfu)
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
