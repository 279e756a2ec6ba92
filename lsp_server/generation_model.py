"""The model completions run on, and the atomic hot swap of its adapter.

Encoding (inside `update_repository`) must see the frozen base model with no adapter, while
completions see the repository's adapter, and neither may wait for the other. So the server
keeps two module trees over ONE copy of the frozen weights: the loaded base model (encoding)
and a twin built by `copy.deepcopy` with every parameter shared through the memo. Only the twin
receives LoRA, in one of two ways:

- merged: the twin owns its LoRA target weights (q_proj, v_proj: a few percent of the model)
  and holds W + (alpha / r) B A in them; a swap computes the new tensors aside and then points
  the modules at them under the lock. No per-token cost.
- peft: the twin is wrapped by `attach_lora` (a PeftModel) and swapped with
  `swap_lora_weights`. No copied weights, but two extra matmuls per target every token.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from lsp_server.config import LoraMode
from repo2lora.adapters.apply import (
    attach_lora,
    merged_target_weights,
    swap_lora_weights,
    weight_sharing_twin,
)
from repo2lora.adapters.weights import LoraWeights, neutral_adapter
from repo2lora.decoding import in_layout, layout_of
from repo2lora.models.loading import LoadedModel
from repo2lora.prompt_tokens import PromptTokenizer


@dataclass(frozen=True)
class InstalledAdapter:
    """What the generation model is running with. Version 0 is the base model's behaviour."""

    version: int
    commit: str | None
    worktree: bool  # uncommitted edits are folded in
    path: str | None
    fingerprint: str | None
    source: str  # "none", "stored" (found at start), "update", "regenerate"
    installed_at: float


def resolve_lora_mode(mode: LoraMode, model: Any, template: LoraWeights) -> str:
    if mode != "auto":
        return mode
    dtypes = {model.get_submodule(p).weight.dtype for p in template.tensors}
    return "merged" if dtypes == {torch.float32} else "peft"


class GenerationModel:
    """The twin completions run on; `lock` is held for a whole generation and for the pointer
    swap of an install, so a completion sees exactly one adapter and its version."""

    def __init__(self, base: LoadedModel, template: LoraWeights, mode: LoraMode = "auto") -> None:
        self.base = base
        self.tokenizer = PromptTokenizer(base.tokenizer)  # the prompt's unchanged start: kept
        self.mode = resolve_lora_mode(mode, base.model, template)
        self.lock = threading.Lock()
        self._shapes = {p: (a.shape, b.shape) for p, (a, b) in template.tensors.items()}
        self._scaling = template.scalings()
        self.model: Any
        if self.mode == "merged":
            self.model = weight_sharing_twin(base.model, {f"{p}.weight" for p in self._shapes})
        else:
            twin = weight_sharing_twin(base.model)
            self.model = attach_lora(twin, neutral_adapter(template), base.info.spec)
        self.installed = InstalledAdapter(0, None, False, None, None, "none", time.time())
        self.swap_seconds: dict[str, float] = {}

    def _check(self, weights: LoraWeights) -> None:
        shapes = {p: (a.shape, b.shape) for p, (a, b) in weights.tensors.items()}
        scalings = weights.scalings()
        if shapes != self._shapes or any(
            abs(scalings[p] - self._scaling[p]) > 1e-9 for p in self._scaling
        ):
            raise ValueError(
                "the adapter does not fit the loaded model (different targets, shapes or "
                "scaling); it was made by another hypernetwork"
            )

    def install(
        self,
        weights: LoraWeights,
        *,
        commit: str | None,
        worktree: bool = False,
        path: str | None = None,
        fingerprint: str | None = None,
        source: str = "update",
    ) -> InstalledAdapter:
        """Swap `weights` in atomically (a mismatch raises before anything changes)."""
        self._check(weights)
        t0 = time.perf_counter()
        staged = None
        if self.mode == "merged":  # each new weight stored as the one it replaces
            staged = {
                p: in_layout(w, layout_of(self.model.get_submodule(p).weight))
                for p, w in merged_target_weights(self.base.model, weights).items()
            }
        t1 = time.perf_counter()
        with self.lock:
            t2 = time.perf_counter()
            if staged is not None:
                for p, w in staged.items():
                    self.model.get_submodule(p).weight.data = w
            else:
                swap_lora_weights(self.model, weights)
            self.installed = InstalledAdapter(
                self.installed.version + 1,
                commit,
                worktree,
                path,
                fingerprint,
                source,
                time.time(),
            )
            t3 = time.perf_counter()
        self.swap_seconds = {"prepare": t1 - t0, "wait": t2 - t1, "locked": t3 - t2}
        return self.installed
