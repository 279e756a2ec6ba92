"""Latency of the language server's completions, with the repository adapter vs the base
model, and what serving costs: start-up, adapter swap time and memory. Prints one JSON object;
never fails on a missed target.

In process, through the functions the server runs (`Session`, `GenerationModel`,
`generate_completion` + `postprocess`): single-line completions at cursors in real source files,
base / merged adapter / PEFT adapter interleaved so machine load hits all alike; typing along at
a cursor (the prompt's keys and values reused keystroke after keystroke, as in an editor); a
fixed-length decode for the per-token cost; a retrieval prompt (bm25s top chunks in the same
token budget) for comparison. End to end: the real `repo2lora serve --stdio` driven by a pygls
client: time to `initialize`, to the first completion (base model), to the first
adapter-backed completion, latency of a few requests, and its RSS.

`--profile` writes down where one completion's time goes instead: tokenisation, prefill,
per-token decode, detokenisation, post-processing and the session's bookkeeping, for each
decoder (`repo2lora.decoding`) interleaved, with the arithmetic and memory floors of a token.

    python -m benchmark.lsp_latency [--models tiny-random,default] [--requests 40] [--e2e 10]
    python -m benchmark.lsp_latency --profile [--models default] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmark.lsp_latency.end_to_end import end_to_end
from benchmark.lsp_latency.in_process import in_process
from benchmark.lsp_latency.profile import profile
from benchmark.lsp_latency.workload import TARGETS, make_repository
from benchmark.speed.scaffold import machine_info

# -- main -----------------------------------------------------------------------------------


def projection_qwen_1_5b() -> dict[str, Any]:
    """What the two designs cost for Qwen2.5-Coder-1.5B (architecture numbers from its config,
    counted on the meta device: nothing is downloaded), rank 8 on q_proj and v_proj."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    targets = sum(
        m.weight.numel() for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))
    )
    lora = sum(
        8 * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if n.endswith(("q_proj", "v_proj"))
    )
    out = {"parameters": params, "lora_target_parameters": targets}
    for dtype, size in (("fp32", 4), ("bf16", 2)):
        out[dtype] = {
            "two_full_instances_gb": round(2 * params * size / 2**30, 2),
            "shared_twin_merged_gb": round((params + targets) * size / 2**30, 2),
            "shared_twin_peft_gb": round((params + lora) * size / 2**30, 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmark.lsp_latency",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    ap.add_argument(
        "--models", default=None, help="default: tiny-random,default (--profile: default)"
    )
    ap.add_argument("--requests", type=int, default=40, help="cursors timed in process")
    ap.add_argument("--e2e", type=int, default=10, help="requests timed over stdio (0: none)")
    ap.add_argument("--profile", action="store_true", help="only where a completion's time goes")
    ap.add_argument(
        "--startup",
        action="store_true",
        help="only where the server's start goes: the light start against --no-light-start",
    )
    ap.add_argument("--startup-runs", type=int, default=5, help="starts of each variant")
    ap.add_argument("--device", default="cpu", help="where the in-process model runs (cuda)")
    ap.add_argument(
        "--e2e-sources",
        help="comma-separated directories of Python code the server follows end to end "
        "(default: this project's repo_encoder and evo_state)",
    )
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    load_before = round(os.getloadavg()[0], 2)
    models = args.models or ("default" if args.profile else "tiny-random,default")
    sources = [Path(p).resolve() for p in args.e2e_sources.split(",")] if args.e2e_sources else None
    results: dict[str, Any] = {}
    if args.startup:
        from benchmark.lsp_startup import serving, stages, starts

        with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
            root = make_repository(Path(tmp) / "repo")
            results["default"] = {
                "stages": stages(args.startup_runs),
                "serving": serving(root, args.requests),
                "starts": starts(root, root / "evo_state" / "store.py", args.startup_runs),
            }
        models = ""
    for spec in filter(None, models.split(",")):
        model = None if spec == "default" else spec
        with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
            root = make_repository(Path(tmp) / "repo")
            if args.profile:
                results[spec] = profile(model, root, args.requests, args.device)
                continue
            results[spec] = {"in_process": in_process(model, root, args.requests, args.device)}
        if args.e2e > 0 and args.device == "cpu":  # the server runs on the CPU only
            with tempfile.TemporaryDirectory(prefix="lsp-latency-") as tmp:
                root = make_repository(Path(tmp) / "repo", sources)
                e2e = end_to_end(model, root, args.e2e)
            e2e["meets"] = {
                "single_line_p50": e2e["p50_ms"] <= TARGETS["single_line_p50_ms"],
                "single_line_p95": e2e["p95_ms"] <= TARGETS["single_line_p95_ms"],
                "start_to_first_completion": e2e["start_to_first_completion_s"]
                <= TARGETS["start_to_first_completion_s"],
            }
            results[spec]["end_to_end_stdio"] = e2e
    mode = " --profile" if args.profile else " --startup" if args.startup else ""
    report: dict[str, Any] = {
        "benchmark": "lsp_latency" + mode,
        "targets": TARGETS,
        "machine": machine_info(load_before),
        "models": results,
    }
    if not (args.profile or args.startup):
        report["projection_qwen2.5-coder-1.5b"] = projection_qwen_1_5b()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
