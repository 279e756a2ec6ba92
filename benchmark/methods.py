"""How each benchmarked method turns a task into a completion and a target NLL: the methods
differ only in the model they run (the base model, a peft LoRA, or the base model with a
generated adapter hot-swapped in) and the prompt they give it (the task's prefix, or retrieved
chunks + the prefix). Completions come from the same `generate_completion` users get."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmark.metrics import score_completion, target_nll
from repo2lora.adapters.apply import attach_lora, swap_lora_weights, weight_sharing_twin
from repo2lora.adapters.weights import LoraWeights
from repo2lora.generation import GenerationConfig, generate_completion
from repo2lora.hypernet.protocol import Generator, SnapshotInput, snapshot_adapter
from repo2lora.models.loading import LoadedModel
from repo_encoder.chunk import Chunk

CONSTANT = "constant"
BASE = "base"
RAG = "rag"
SHARED_LORA = "shared-lora"
PER_REPO_LORA = "per-repo-lora"
STATIC = "code2lora-static"
EVO = "code2lora-evo"
SHINE = "shine"
DND = "dnd"
# The leakage rule's second setting, side by side with the default: the encoder (and the
# retriever) also see the repository's test code, minus every test function that holds an
# evaluated target (and, on the evolution track, minus the test changes of the commit whose
# assertions are evaluated)
RAG_WITH_TESTS = "rag+tests"
STATIC_WITH_TESTS = "code2lora-static+tests"
EVO_WITH_TESTS = "code2lora-evo+tests"
# Code2LoRA plus the names memory on the LM head (static track: the snapshot's names)
NAMES = "code2lora-names"
ALL_METHODS: tuple[str, ...] = (
    CONSTANT,
    BASE,
    RAG,
    SHARED_LORA,
    PER_REPO_LORA,
    STATIC,
    EVO,
    NAMES,
    SHINE,
    DND,
)

# Rows the evolution track adds for the per-commit-distance comparison: the static hypernetwork
# at every commit (a fresh snapshot's state, computed at the cost of each commit's diff:
# `walk.StaticWalk`), the evolving hypernetwork's state at the walk start, and its snapshot
# state h_0 at every commit (its own encoder, moved the same way: no GRU step).
STATIC_AT_COMMIT = "code2lora-static@commit"
EVO_AT_START = "code2lora-evo@start"
EVO_AT_COMMIT = "code2lora-evo@commit"


@dataclass(frozen=True)
class EvalConfig:
    """The budgets every method shares: prompt tokens (cut from the front), target tokens
    scored by the NLL, and new tokens generated."""

    prompt_tokens: int = 256
    target_tokens: int = 64
    max_new_tokens: int = 48
    nll_batch: int = 16

    def generation(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            single_line=True,
            max_prompt_tokens=self.prompt_tokens,
            window_step=1,  # exactly the budget the NLL and the reported prompt tokens use
        )


@dataclass(frozen=True)
class MethodResult:
    """One task under one method. `nll` is None for the constant baseline (not a model);
    `seconds` is the wall time of producing the completion (retrieval included)."""

    completion: str
    prediction: str
    strict_em: bool
    reference_cut_em: bool
    edit_similarity: float
    nll: float | None
    prompt_tokens: int
    retrieved_tokens: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def scored(cls, completion: str, target: str, **costs: Any) -> MethodResult:
        """`completion` scored against `target` (strict EM, edit similarity, the labelled
        reference-cut match), with the method's costs (nll, prompt tokens, seconds...)."""
        return cls(completion=completion, **asdict(score_completion(completion, target)), **costs)


def prompt_token_count(tokenizer: Any, prompt: str, budget: int) -> int:
    """Tokens of `prompt` the model actually sees (the front is cut to `budget`)."""
    return min(len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), budget)


def run_model(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[str],
    cfg: EvalConfig,
    *,
    extra_seconds: Sequence[float] | None = None,
    retrieved_tokens: Sequence[int] | None = None,
    on_task: Callable[[], None] | None = None,
) -> list[MethodResult]:
    """Greedy single-line completions (timed one by one) and teacher-forced target NLLs
    (batched) of `model` on the prompts."""
    gen = cfg.generation()
    completions: list[str] = []
    seconds: list[float] = []
    for i, prompt in enumerate(prompts):
        t = time.perf_counter()
        completions.append(generate_completion(model, tokenizer, prompt, gen))
        seconds.append(time.perf_counter() - t + (extra_seconds[i] if extra_seconds else 0.0))
        if on_task is not None:
            on_task()
    nlls = target_nll(
        model, tokenizer, prompts, targets, cfg.prompt_tokens, cfg.target_tokens, cfg.nll_batch
    )
    return [
        MethodResult.scored(
            completion,
            target,
            nll=nlls[i],
            prompt_tokens=prompt_token_count(tokenizer, prompts[i], cfg.prompt_tokens),
            retrieved_tokens=retrieved_tokens[i] if retrieved_tokens else 0,
            seconds=seconds[i],
        )
        for i, (completion, target) in enumerate(zip(completions, targets, strict=True))
    ]


def most_frequent(targets: Sequence[str]) -> str:
    """The most frequent string (ties: the smallest), "" for none."""
    if not targets:
        return ""
    counts = collections.Counter(targets)
    return min(counts, key=lambda t: (-counts[t], t))


def constant_results(constant: str, targets: Sequence[str]) -> list[MethodResult]:
    """The constant baseline: the same prediction for every task, no model, no prompt."""
    return [
        MethodResult.scored(constant, t, nll=None, prompt_tokens=0, retrieved_tokens=0, seconds=0.0)
        for t in targets
    ]


class AdapterSlot:
    """A private copy of the base model with one LoRA slot: generated adapters are attached
    once and then hot-swapped in place, one repository (or commit) after another."""

    def __init__(self, base: LoadedModel) -> None:
        self._base = base
        self.model: Any = None

    def load(self, weights: LoraWeights) -> Any:
        if self.model is None:
            # peft never writes the base weights: the slot shares them with the base model
            self.model = attach_lora(weight_sharing_twin(self._base.model), weights)
        else:
            swap_lora_weights(self.model, weights)
        return self.model


@torch.no_grad()
def generate_adapter(net: Generator, state: torch.Tensor) -> LoraWeights:
    """One adapter from a hypernetwork state [state_dim]."""
    return net.generate(state).detached()


def stateless_adapter(
    net: Generator, base: LoadedModel, chunks: list[Chunk], vectors: torch.Tensor
) -> LoraWeights:
    """One adapter of a snapshot from a generator without a vector state (SHINE reads the
    chunks' text with the base model, DnD decodes the chunk vectors)."""
    return snapshot_adapter(net, SnapshotInput(vectors, chunks, base.model, base.tokenizer))
