"""Which modules of a base model receive LoRA, decided in one place from the model itself: its
repeated layer blocks, the linear projections inside them (`nn.Linear`, and GPT-2's `Conv1D`),
and the user's choice resolved against them (`choose_target_modules`). Every generator,
trainer, exporter and estimate asks this module; nothing else names a projection.

A choice is a tuple of words, each a preset or a module name:
- `attention` (the default): the query and value projections where they are separate modules
  (`q_proj`, `v_proj`: Llama, Qwen2, Mistral, Gemma, StarCoder2), the fused query-key-value
  projection where they are one (`c_attn`: GPT-2, GPT-BigCode; `query_key_value`: GPT-NeoX,
  Falcon; `qkv_proj`: Phi-3; `Wqkv`: MPT). A LoRA on a fused projection adapts q, k and v
  together, as PEFT does by default for those models.
- `all-linear`: every linear projection of every layer block (attention and MLP), never the
  LM head or the embeddings (PEFT's `all-linear`).
- a name (`o_proj`, `c_proj`, `attn.c_proj`): the projections whose path inside a layer block
  is that name or ends with it.

A target's module type is the shortest end of its path inside the block that no other
projection of the block shares: `q_proj`, `c_attn`, but `attn.c_proj` and `mlp.c_proj` where
GPT-2 has two `c_proj`. PEFT matches `target_modules` by path ending, so the module types are
also the PEFT adapter's `target_modules` and select exactly the modules the adapter holds.

`Conv1D` (GPT-2) keeps its weight as [in, out]: its LoRA pair has a Linear's shapes (A [r, in],
B [out, r]) and the same update of the output, but merged into the weight it adds (B A)^T, and
the PEFT config says `fan_in_fan_out`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from repo_encoder.errors import UserError

ATTENTION = "attention"
ALL_LINEAR = "all-linear"
PRESETS = (ATTENTION, ALL_LINEAR)
DEFAULT_TARGETS: tuple[str, ...] = (ATTENTION,)

# leaf names of projections inside an attention block, by role (compared lower-case)
_QUERY = {"q_proj", "query", "q", "wq", "q_lin"}
_VALUE = {"v_proj", "value", "v", "wv", "v_lin"}
_FUSED_QKV = {"c_attn", "qkv_proj", "query_key_value", "wqkv", "qkv", "w_pack"}


@dataclass(frozen=True)
class LoraTarget:
    """One projection that receives a LoRA pair, e.g. `model.layers.3.self_attn.q_proj`."""

    path: str
    module_type: str  # the shortest unique end of its path inside the layer, e.g. "q_proj"
    layer: int
    in_features: int
    out_features: int
    fan_in_fan_out: bool = False  # Conv1D: the weight is [in, out]


def is_projection(module: nn.Module) -> bool:
    """A module LoRA can adapt: a Linear, or GPT-2's Conv1D."""
    return isinstance(module, nn.Linear | Conv1D)


def is_fan_in_fan_out(module: nn.Module) -> bool:
    return isinstance(module, Conv1D)


def projection_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a projection."""
    w: torch.Tensor = module.weight  # type: ignore[assignment]
    if is_fan_in_fan_out(module):
        return int(w.shape[0]), int(w.shape[1])
    return int(w.shape[1]), int(w.shape[0])


def layer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The repeated layer blocks: the first ModuleList (in module order) of
    `num_hidden_layers` blocks that hold projections, else the longest such list."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if not any(is_projection(m) for m in module[0].modules()):
            continue
        if n is not None and len(module) == n:
            return name, module
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise UserError(
            f"cannot find the layer blocks of this model ({type(model).__name__}); "
            "repo2lora adapts transformers causal LMs whose layers are a ModuleList"
        )
    return best


def _unique_ends(paths: list[str]) -> dict[str, str]:
    """Each path's shortest end (in dotted components) that no other path ends with."""
    split = {p: p.split(".") for p in paths}
    out = {}
    for p, parts in split.items():
        for k in range(1, len(parts) + 1):
            end = parts[-k:]
            if not any(o != p and op[-k:] == end for o, op in split.items()):
                out[p] = ".".join(end)
                break
        else:
            out[p] = p
    return out


def layer_projections(model: nn.Module) -> list[LoraTarget]:
    """Every projection inside every layer block, in layer order then module order."""
    prefix, blocks = layer_blocks(model)
    targets = []
    for i, block in enumerate(blocks):
        found = [(rel, m) for rel, m in block.named_modules() if rel and is_projection(m)]
        names = _unique_ends([rel for rel, _ in found])
        for rel, m in found:
            fi, fo = projection_shape(m)
            path = f"{prefix}.{i}.{rel}" if prefix else f"{i}.{rel}"
            targets.append(LoraTarget(path, names[rel], i, fi, fo, is_fan_in_fan_out(m)))
    return targets


def _attention_types(projections: list[LoraTarget]) -> set[str]:
    """Module types of the query and value projections (or the fused QKV projection)."""
    by_role: dict[str, set[str]] = {"q": set(), "v": set(), "qkv": set()}
    for t in projections:
        parts = t.module_type.lower().split(".")
        rel = t.path.lower().split(".")
        in_attention = any("attn" in c or "attention" in c for c in rel[:-1])
        if not in_attention:
            continue
        leaf = parts[-1]
        for role, names in (("q", _QUERY), ("v", _VALUE), ("qkv", _FUSED_QKV)):
            if leaf in names:
                by_role[role].add(t.module_type)
    if by_role["q"] and by_role["v"]:
        return by_role["q"] | by_role["v"]
    return by_role["qkv"]


def _names(projections: list[LoraTarget]) -> str:
    return ", ".join(dict.fromkeys(t.module_type for t in projections))


def select_targets(model: nn.Module, choice: Sequence[str]) -> list[LoraTarget]:
    """The projections `choice` names (see the module docstring), in layer order. A word that
    names nothing, or an `attention` the model's names do not reveal, is a UserError that lists
    what the model has."""
    projections = layer_projections(model)
    words = [w.strip() for w in choice if w.strip()] or list(DEFAULT_TARGETS)
    wanted: set[str] = set()
    for word in words:
        if word == ALL_LINEAR:
            wanted |= {t.module_type for t in projections}
        elif word == ATTENTION:
            found = _attention_types(projections)
            if not found:
                raise UserError(
                    f"cannot tell which projections of this model ({type(model).__name__}) "
                    f"are its attention's; its layers have {_names(projections)}: pass "
                    "--target-modules with some of those names, or all-linear"
                )
            wanted |= found
        else:
            prefix = layer_blocks(model)[0]
            hits = {
                t.module_type
                for t in projections
                if _layer_relative(t.path, prefix) == word
                or _layer_relative(t.path, prefix).endswith("." + word)
            }
            if not hits:
                raise UserError(
                    f"the base model has no projection named {word!r} in its layers; it has "
                    f"{_names(projections)} (or pass attention or all-linear)"
                )
            wanted |= hits
    return [t for t in projections if t.module_type in wanted]


def _layer_relative(path: str, prefix: str) -> str:
    rest = path[len(prefix) + 1 :] if prefix else path
    return rest.split(".", 1)[1]


def choose_target_modules(model: nn.Module, choice: Sequence[str]) -> tuple[str, ...]:
    """The module types `choice` resolves to for `model`, sorted: what a generator config and a
    PEFT adapter record."""
    return tuple(sorted({t.module_type for t in select_targets(model, choice)}))


def weightless_model(config: PretrainedConfig) -> nn.Module:
    """A meta-device instance of the causal LM `config` describes: its module tree and shapes,
    no weights."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def output_head(model: nn.Module) -> LoraTarget:
    """The LM head (the projection from the last hidden state to the vocabulary's logits) as a
    target outside the layer blocks (`layer` -1). Its module type is its path (`lm_head`), which
    is also how PEFT's `target_modules` names it. It may be tied to the input embeddings: a
    LoRA on it leaves the shared weight alone, but merging one into it would not."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise UserError(
            f"the LM head of this model ({type(model).__name__}) is not a linear projection; "
            "a names memory needs one"
        )
    path = next(name for name, m in model.named_modules() if m is head)
    fi, fo = projection_shape(head)
    return LoraTarget(path, path, -1, fi, fo)


def find_lora_targets(config: PretrainedConfig, choice: Sequence[str]) -> list[LoraTarget]:
    """The projections `choice` names in the model `config` describes (no weights loaded)."""
    return select_targets(weightless_model(config), choice)


def parse_target_modules(text: str) -> tuple[str, ...]:
    """`--target-modules` as given on a command line: `attention`, `all-linear` or
    comma-separated names."""
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    if not words:
        raise UserError(
            "--target-modules is empty; pass attention, all-linear or module names (q_proj,v_proj)"
        )
    return words


def param_key(module_type: str) -> str:
    """A module type as a ModuleDict key (which may not contain dots)."""
    return module_type.replace(".", "__")


def module_shapes(targets: list[LoraTarget]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each module type, which every layer must share."""
    shapes: dict[str, tuple[int, int]] = {}
    for t in targets:
        shapes.setdefault(t.module_type, (t.in_features, t.out_features))
        if shapes[t.module_type] != (t.in_features, t.out_features):
            raise UserError(
                f"{t.module_type} has different shapes in different layers; choose target "
                "modules whose shape every layer shares"
            )
    return shapes


def uses_fan_in_fan_out(targets: list[LoraTarget]) -> bool:
    return any(t.fan_in_fan_out for t in targets)
