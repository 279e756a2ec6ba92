"""The forward passes of greedy decoding: a causal LM fed a growing token sequence, its keys and
values kept between calls, only the last position's logits computed.

A completion needs one forward over the prompt (prefill) and one per new token. A token of the
5M-parameter default needs about 12 MFLOPs but must read all 21 MB of its weights, so on a CPU a
decoding step is bound by memory traffic and per-call overhead, not by arithmetic. What cuts
it here, each part chosen by measurement (`python -m benchmark.lsp_latency --profile`):

- `StaticKVDecoder`, for Llama-family models (llama, qwen2, mistral; full attention over
  SDPA): a loop written for one sequence over preallocated key/value buffers, where dropping a
  cached suffix is setting a length, without the transformers forward's per-call bookkeeping
  (mask construction, cache objects, output dataclasses, decorators). It calls the model's own
  modules (norms, projections, MLP, rotary embedding), so a merged or PEFT adapter, biases and
  rope scaling all apply, and it mirrors transformers' SDPA path op for op (the same attention
  calls with the same masks): the same logits, bit for bit.
- `TransformersDecoder`, for every other causal LM: the model's forward with a `DynamicCache`.
- Both compute the last position's logits only: for a prompt, the LM head over every position
  is most of the work that is thrown away (for the default, about 40% of a prefill).
- `set_linear_layout`: weights stored column-major make one-token products faster.
- Fewer, larger operations per layer where the result is provably the same bits (a float32
  model whose projections are plain `nn.Linear`s without bias, whose norms are the standard
  RMSNorm and whose rope does not depend on the sequence): q/k/v and gate/up each as one
  product over concatenated weights (each output column is the same dot product), RMSNorm as
  `F.rms_norm` (the same float32 ops), and rope on q and k at once from cos/sin tables computed
  once per buffer size, with rotate_half(x) * sin written as roll(x) * (sin with its first half
  negated) (negation is exact). The concatenated weights are rebuilt when a weight changes (an
  adapter swap); a PEFT-wrapped projection runs its module as before. `tests/test_decoding.py`
  checks the logits bit for bit against transformers' forward.

`make_decoder` picks one; `repo2lora.generation` runs the greedy loop over either.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

DecoderKind = Literal["auto", "static", "transformers"]

# architectures whose decoder layer is exactly: norm, attention (q/k/v/o projections, rotary,
# SDPA), residual, norm, MLP, residual; and whose model applies embed, layers, final norm, head
STATIC_KV_MODEL_TYPES = frozenset({"llama", "qwen2", "mistral"})
_CAPACITY_STEP = 256  # key/value buffers grow in steps of this many positions
# rope types whose cos/sin at a position do not depend on the sequence (so a table holds)
_STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3"})
# the fused (concatenated) projection weights are extra memory: only up to this many bytes
_FUSED_BYTES_MAX = 64 * 2**20


class Decoder(Protocol):
    """Feeds tokens to a causal LM, keeping the keys and values of everything fed so far."""

    model: Any
    kind: str  # "static" or "transformers" (`decoder_kind`)
    length: int  # positions whose keys and values are held

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions (a shared prompt start), drop the rest."""
        ...

    def feed(self, ids: Sequence[int]) -> torch.Tensor:
        """Process `ids` at the positions after `length`; the next-token logits [vocab]."""
        ...


def _language_model(model: Any) -> Any:
    """The transformers model under a PeftModel (its LoRA layers stay in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def static_kv_supported(model: Any) -> bool:
    """Whether `StaticKVDecoder` reproduces this model's forward: a Llama-family architecture
    with full attention everywhere, run with SDPA."""
    lm = _language_model(model)
    cfg = getattr(lm, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in STATIC_KV_MODEL_TYPES:
        return False
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    layer_types = getattr(cfg, "layer_types", None) or ["full_attention"]
    if any(t != "full_attention" for t in layer_types):
        return False
    if cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None) is not None:
        return False
    body = getattr(lm, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if body is None or not all(hasattr(body, n) for n in needed) or not hasattr(lm, "lm_head"):
        return False
    module = sys.modules.get(type(body.layers[0].self_attn).__module__)
    return all(hasattr(module, f) for f in ("apply_rotary_pos_emb", "repeat_kv"))


def decoder_kind(model: Any, kind: DecoderKind = "auto") -> Literal["static", "transformers"]:
    """Which decoder `make_decoder(model, kind)` builds: the static-KV one where the
    architecture has one ("auto"), else the transformers forward; "static" insists (a
    ValueError for an unsupported model)."""
    if kind == "transformers" or (kind == "auto" and not static_kv_supported(model)):
        return "transformers"
    if not static_kv_supported(model):
        raise ValueError("the static-KV decoder supports Llama-family models run with SDPA only")
    return "static"


def make_decoder(model: Any, kind: DecoderKind = "auto") -> Decoder:
    if decoder_kind(model, kind) == "transformers":
        return TransformersDecoder(model)
    return StaticKVDecoder(model)


class TransformersDecoder:
    """Any causal LM through its own forward and a `DynamicCache`. `all_logits` computes every
    position's logits, as the path before the static-KV decoder did (the benchmark's
    baseline); the default computes the last position's only."""

    kind = "transformers"

    def __init__(self, model: Any, all_logits: bool = False) -> None:
        from transformers import DynamicCache

        self.model = model
        self._lm = _language_model(model)
        params = inspect.signature(self._lm.forward).parameters
        # transformers renamed `past_key_values` to `cache` during 5.x; the old name warns
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        keep_last = "logits_to_keep" in params and not all_logits
        self._keep_last = {"logits_to_keep": 1} if keep_last else {}
        self._new_cache: Callable[[], Any] = lambda: DynamicCache(config=self._lm.config)
        self._cache = self._new_cache()
        self._device = next(model.parameters()).device
        self.length = 0

    def truncate(self, length: int) -> None:
        if length <= 0:
            self._cache = self._new_cache()
        elif length < self.length:
            self._cache.crop(length - self.length)  # a negative count: remove from the end
        self.length = min(self.length, max(0, length))

    def feed(self, ids: Sequence[int]) -> torch.Tensor:
        x = torch.tensor([list(ids)], dtype=torch.long, device=self._device)
        kwargs = {self._cache_arg: self._cache, **self._keep_last}
        try:
            out = self.model(input_ids=x, use_cache=True, **kwargs)
        except BaseException:  # some layers may hold the failed positions: start over
            self.truncate(0)
            raise
        self.length += len(ids)
        return out.logits[0, -1]


class StaticKVDecoder:
    """A Llama-family model's forward for one sequence, over key/value buffers allocated once
    (grown in steps when a longer sequence comes). Shapes: hidden [1, n, hidden]; q
    [1, heads, n, head_dim]; k, v [1, kv_heads, n, head_dim]; each layer's buffers
    [1, kv_heads, capacity, head_dim]."""

    kind = "static"

    def __init__(self, model: Any) -> None:
        self.model = model
        lm = _language_model(model)
        self._lm = lm
        self._body = lm.model
        cfg = lm.config
        self._layers = list(self._body.layers)[: cfg.num_hidden_layers]
        attn = self._layers[0].self_attn
        module = sys.modules[type(attn).__module__]
        self._rotary: Callable[..., tuple[torch.Tensor, torch.Tensor]] = module.apply_rotary_pos_emb
        self._repeat_kv: Callable[[torch.Tensor, int], torch.Tensor] = module.repeat_kv
        self._head_dim = int(attn.head_dim)
        self._groups = int(attn.num_key_value_groups)
        self._kv_heads = cfg.num_attention_heads // self._groups
        self._gqa = self._groups > 1  # transformers passes enable_gqa only then
        self._max_positions = int(getattr(cfg, "max_position_embeddings", 0) or 0)
        weight = self._body.embed_tokens.weight
        self._device, self._dtype = weight.device, weight.dtype
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self.length = 0
        self._lean = _lean_path_holds(lm, self._layers)
        # cos [1, 1, capacity, head_dim], and sin with its first half negated (`_rope`)
        self._cos = self._sin_signed = torch.empty(1, 1, 0, 0)
        # (module ids) -> (the weights' identities and versions, their concatenation, the
        # weights themselves: held so that no other tensor can take their address)
        self._fused: dict[tuple[int, ...], tuple[tuple[Any, ...], torch.Tensor, Any]] = {}

    @property
    def capacity(self) -> int:
        return self._keys[0].shape[2] if self._keys else 0

    def truncate(self, length: int) -> None:
        self.length = min(self.length, max(0, length))

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        size = -(-needed // _CAPACITY_STEP) * _CAPACITY_STEP
        if self._max_positions:
            size = max(needed, min(size, self._max_positions))
        shape = (1, self._kv_heads, size, self._head_dim)
        keys, values = [], []
        for i in range(len(self._layers)):
            k = torch.empty(shape, dtype=self._dtype, device=self._device)
            v = torch.empty(shape, dtype=self._dtype, device=self._device)
            if self.length:
                k[:, :, : self.length] = self._keys[i][:, :, : self.length]
                v[:, :, : self.length] = self._values[i][:, :, : self.length]
            keys.append(k)
            values.append(v)
        self._keys, self._values = keys, values

    def feed(self, ids: Sequence[int]) -> torch.Tensor:
        start, n = self.length, len(ids)
        end = start + n
        self._reserve(end)
        x = torch.tensor([list(ids)], dtype=torch.long, device=self._device)
        h = self._body.embed_tokens(x)
        mask = None
        if n > 1 and start > 0:  # a prompt continuing a cached start: causal, offset by `start`
            kv = torch.arange(end, device=self._device)
            mask = (kv[None, :] <= kv[start:, None]).view(1, 1, n, end)
        if self._lean:
            h = self._lean_layers(h, start, end, mask)
            norm = self._body.norm
            last = F.rms_norm(h[:, -1:, :], (h.shape[-1],), norm.weight, norm.variance_epsilon)
        else:
            positions = torch.arange(start, end, device=self._device).unsqueeze(0)
            cos, sin = self._body.rotary_emb(h, position_ids=positions)
            for i, layer in enumerate(self._layers):
                x = layer.input_layernorm(h)
                h = h + self._attention(i, layer.self_attn, x, cos, sin, mask)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            last = self._body.norm(h[:, -1:, :])
        self.length = end
        return self._lm.lm_head(last)[0, -1]

    def _lean_layers(
        self, h: torch.Tensor, start: int, end: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The decoder layers with fused projections, `F.rms_norm` and the rope tables (see the
        module docstring): the same bits as the modules' own forwards."""
        if self._cos.shape[2] < end:
            self._rope_tables(max(end, self.capacity))
        cos = self._cos[:, :, start:end]
        sin = self._sin_signed[:, :, start:end]
        width = h.shape[-1]
        for i, layer in enumerate(self._layers):
            attn, mlp = layer.self_attn, layer.mlp
            norm = layer.input_layernorm
            x = F.rms_norm(h, (width,), norm.weight, norm.variance_epsilon)
            h = h + self._lean_attention(i, attn, x, cos, sin, mask)
            norm = layer.post_attention_layernorm
            x = F.rms_norm(h, (width,), norm.weight, norm.variance_epsilon)
            gate_up = self._fused_weight((mlp.gate_proj, mlp.up_proj))
            if gate_up is None:
                h = h + mlp(x)
                continue
            gate, up = F.linear(x, gate_up).split(mlp.gate_proj.out_features, dim=-1)
            h = h + mlp.down_proj(mlp.act_fn(gate) * up)
        return h

    def _rope_tables(self, size: int) -> None:
        """cos and signed sin [1, 1, size, head_dim] from the model's own rotary embedding."""
        positions = torch.arange(size, device=self._device).unsqueeze(0)
        probe = torch.zeros(1, 1, 1, dtype=self._dtype, device=self._device)
        cos, sin = self._body.rotary_emb(probe, position_ids=positions)  # [1, size, head_dim]
        half = self._head_dim // 2
        self._cos = cos.unsqueeze(1)
        self._sin_signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(1)

    def _fused_weight(self, modules: tuple[Any, ...]) -> torch.Tensor | None:
        """The weights of `modules` (plain bias-free linears) concatenated along the outputs,
        in their layout; None when one is not such a linear (e.g. wrapped by PEFT)."""
        if any(type(m) is not torch.nn.Linear or m.bias is not None for m in modules):
            return None
        weights = [m.weight for m in modules]
        identity = tuple((w.data_ptr(), w._version, w.shape) for w in weights)
        key = tuple(id(m) for m in modules)
        hit = self._fused.get(key)
        if hit is not None and hit[0] == identity:
            return hit[1]
        held = [w.detach() for w in weights]
        fused = in_layout(torch.cat(held), layout_of(weights[0]))
        self._fused[key] = (identity, fused, held)
        return fused

    def _lean_attention(
        self,
        i: int,
        attn: Any,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin_signed: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        qkv_weight = self._fused_weight((attn.q_proj, attn.k_proj, attn.v_proj))
        if qkv_weight is None:
            return self._attention(i, attn, x, cos[:, 0], sin_signed[:, 0], mask, signed=True)
        n, d = x.shape[1], self._head_dim
        n_q, n_k = attn.q_proj.out_features, attn.k_proj.out_features
        qkv = F.linear(x, qkv_weight)
        qk = qkv[..., : n_q + n_k].view(1, n, -1, d).transpose(1, 2)
        v = qkv[..., n_q + n_k :].view(1, n, -1, d).transpose(1, 2)
        qk = qk * cos + qk.roll(d // 2, dims=-1) * sin_signed  # rope on q and k at once
        q, k = qk[:, : n_q // d], qk[:, n_q // d :]
        return self._attend(i, attn, q, k, v, mask)

    def _attention(
        self,
        i: int,
        attn: Any,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        signed: bool = False,
    ) -> torch.Tensor:
        """Attention through the module's own projections; `signed`: `sin` is the lean path's
        signed table (cos and sin [1, n, head_dim] either way)."""
        n = x.shape[1]
        shape = (1, n, -1, self._head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        if signed:
            half = self._head_dim // 2
            c, s = cos.unsqueeze(1), sin.unsqueeze(1)
            q, k = q * c + q.roll(half, dims=-1) * s, k * c + k.roll(half, dims=-1) * s
        else:
            q, k = self._rotary(q, k, cos, sin)
        return self._attend(i, attn, q, k, v, mask)

    def _attend(
        self,
        i: int,
        attn: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Write k, v at the positions after `length`, attend, project out."""
        n = q.shape[2]
        start, end = self.length, self.length + n
        self._keys[i][:, :, start:end] = k
        self._values[i][:, :, start:end] = v
        keys, values = self._keys[i][:, :, :end], self._values[i][:, :, :end]
        dropout = attn.attention_dropout if attn.training else 0.0
        # the calls transformers' SDPA integration makes for the same three cases
        if mask is None:  # decoding one token (no mask), or a whole prompt (causal)
            out = F.scaled_dot_product_attention(
                q,
                keys,
                values,
                dropout_p=dropout,
                scale=attn.scaling,
                is_causal=n > 1,
                enable_gqa=self._gqa,
            )
        else:
            out = F.scaled_dot_product_attention(
                q,
                self._repeat_kv(keys, self._groups),
                self._repeat_kv(values, self._groups),
                attn_mask=mask,
                dropout_p=dropout,
                scale=attn.scaling,
            )
        out = out.transpose(1, 2).contiguous().reshape(1, n, -1).contiguous()
        return attn.o_proj(out)


def _lean_path_holds(lm: Any, layers: list[Any]) -> bool:
    """Whether `StaticKVDecoder`'s lean path gives this model's bits: float32 weights, the
    standard RMSNorm everywhere, a rope whose table holds, and fused weights of bounded size."""
    body = lm.model
    if body.embed_tokens.weight.dtype != torch.float32 or not layers:
        return False
    norms = [body.norm]
    for layer in layers:
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
    for norm in norms:
        standard = type(norm).__name__.endswith("RMSNorm") and hasattr(norm, "variance_epsilon")
        weight = getattr(norm, "weight", None)
        if not standard or weight is None or weight.dim() != 1:
            return False
    if getattr(body.rotary_emb, "rope_type", "default") not in _STATIC_ROPE_TYPES:
        return False
    mlp = layers[0].mlp
    if not callable(getattr(mlp, "act_fn", None)):
        return False
    per_layer = sum(
        m.weight.numel() * m.weight.element_size()
        for m in (
            layers[0].self_attn.q_proj,
            layers[0].self_attn.k_proj,
            layers[0].self_attn.v_proj,
            mlp.gate_proj,
            mlp.up_proj,
        )
    )
    return per_layer * len(layers) <= _FUSED_BYTES_MAX


WeightLayout = Literal["row", "column"]


def prepare_for_decoding(model: Any) -> None:
    """Lay the model's weights out for one-token forwards: column-major on a CPU (see
    `set_linear_layout`), as loaded elsewhere. Call it once, before the model is shared."""
    if next(model.parameters()).device.type == "cpu":
        set_linear_layout(model, "column")


def set_linear_layout(model: Any, layout: WeightLayout) -> None:
    """Store every linear layer's weight [out, in] row-major (as loaded) or column-major (the
    same values, the module's weight a transposed view of a contiguous [in, out] tensor).

    Chosen by measurement (MKL on the project's 2-core AMD EPYC machines): column-major, a
    one-token forward's matrix-vector products run about a quarter faster, a prompt's matrix
    products at the same speed, and an embedding lookup tied to such a weight gathers strided
    rows (well under a millisecond per prompt). The values are unchanged; the summation order,
    and so the last bits of a product, may differ."""
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        module.weight.data = in_layout(module.weight.data, layout)


def layout_of(weight: torch.Tensor) -> WeightLayout:
    return (
        "column"
        if weight.dim() == 2 and not weight.is_contiguous() and weight.t().is_contiguous()
        else "row"
    )


def in_layout(weight: torch.Tensor, layout: WeightLayout) -> torch.Tensor:
    """`weight` [out, in] stored in `layout` (itself when it already is)."""
    if weight.dim() != 2 or layout_of(weight) == layout:
        return weight
    return weight.contiguous() if layout == "row" else weight.t().contiguous().t()
