"""Where a training process runs and in what precision: its device (one GPU per process under
`accelerate launch`, else the CPU), bf16 autocast on GPUs that have it (the frozen base model's
weights cast to bf16, the generator's kept in float32), activation checkpointing of the frozen
base on GPUs, the base model moved there before chunk encoding (the main process encodes
first, so the others read its cached vectors), and the peak memory a step log reports."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch

from repo2lora.models.loading import LoadedModel
from repo_encoder.errors import UserError

Precision = Literal["auto", "bf16", "fp32"]
Checkpointing = Literal["auto", "on", "off"]
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
CHECKPOINTING: tuple[str, ...] = ("auto", "on", "off")


def on_cuda() -> bool:
    return torch.cuda.is_available()


def single_device(base: LoadedModel) -> torch.device:
    """Moves the base model to the one device a single-process run uses (the GPU when there
    is one, else the CPU) and returns it: the shared LoRA and the fine-tune ceiling, which
    train plain peft LoRAs without accelerate."""
    device = torch.device("cuda" if on_cuda() else "cpu")
    base.model.to(device)
    return device


def mixed_precision(precision: str) -> str:
    """Accelerate's `mixed_precision` for a `precision` setting: "auto" is bf16 on a GPU that
    supports it, full float32 elsewhere."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if on_cuda() and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if precision == "bf16" else "no"


def checkpoints_layers(setting: str) -> bool:
    """Whether the frozen base's layer blocks are checkpointed: "auto" is on with a GPU, where
    activations bound the batch, and off on the CPU, where the recompute costs a third more
    time and memory is rarely the limit."""
    if setting not in CHECKPOINTING:
        raise UserError(
            f"--gradient-checkpointing {setting!r}: choose one of {', '.join(CHECKPOINTING)}"
        )
    return setting == "on" or (setting == "auto" and on_cuda())


def make_accelerator(precision: str = "auto") -> Any:
    """The run's Accelerator: DDP across the processes `accelerate launch` starts (NCCL on GPUs,
    gloo on CPUs), bf16 autocast per `precision`. Accelerate keeps one state per process; a
    single process that runs with another precision than its last run (tests, a benchmark)
    starts it afresh."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    wanted = mixed_precision(precision)
    state = AcceleratorState() if AcceleratorState._shared_state else None
    if state is not None and state.num_processes == 1 and state.mixed_precision != wanted:
        AcceleratorState._reset_state()
    return Accelerator(
        cpu=not on_cuda(),
        mixed_precision=wanted,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


@contextmanager
def encoding_on_training_device(base: LoadedModel) -> Iterator[None]:
    """Within the block, the base model sits on this process's training device (in its float32
    weights, so chunk vectors match the ones a CPU snapshot computes) and the main process runs
    first: with several processes it encodes and caches every chunk vector, and the others then
    read them from the repositories' vector caches instead of encoding them again."""
    from accelerate import PartialState

    state = PartialState(cpu=not on_cuda())
    base.model.to(state.device)
    with state.main_process_first():
        yield


def peak_memory_mb(device: torch.device) -> float:
    """The most memory this process has held: allocated GPU memory on CUDA (what
    `repo2lora.training.memory` estimates), the resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def memory_kind(device: torch.device) -> str:
    return "cuda-max-allocated" if device.type == "cuda" else "cpu-max-rss"
