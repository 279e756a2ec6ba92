"""What the speed benchmarks share: the tiny model and untrained hypernetwork loaded once and
warmed up, and the machine description printed beside every number."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from repo2lora.hypernet.checkpoint import LoadedHypernet, load_hypernet
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo_encoder.embed import embed_texts


@dataclass
class BenchSetup:
    model: LoadedModel
    hyper: LoadedHypernet
    seconds: float
    load_before: float  # 1-minute load average before the run: other work skews timings


def setup_model(spec: str, threads: int) -> BenchSetup:
    """Load `spec` and the untrained hypernetwork once, with one full-size warm-up batch so
    the first size measured does not pay for allocator warm-up."""
    load_before = round(os.getloadavg()[0], 2)
    if threads > 0:
        torch.set_num_threads(threads)
    t = time.perf_counter()
    info = describe_base_model(spec)
    model = load_base_model(info)
    hyper = load_hypernet(None, info)
    embed_texts(model.model, model.tokenizer, ["value = value + 1\n" * 40] * 16)
    return BenchSetup(model, hyper, time.perf_counter() - t, load_before)


def machine_info(load_before: float) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],  # before, after
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
