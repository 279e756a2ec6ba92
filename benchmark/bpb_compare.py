"""Compares base models in bits per byte on the same held-out text, by the same code: each
model's total NLL over a fixed seeded sample of a corpus' held-out split divided by its UTF-8
bytes and ln 2, with xz -9e's bits per byte on that text beside them. Held-out
distributions that any compared model's pretraining manifest lists as training data are left
out (the first default trained on some of them). A model is the embedded
default (`default`), a model directory, or a pretraining run directory (its last checkpoint).
Prints one JSON object.

    python -m benchmark.bpb_compare --corpus runs/corpus default runs/pt [--mb 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from repo2lora.models import describe_base_model, embedded, load_base_model
from repo2lora.pretrain.bpb import bits_per_byte, sample_documents, xz_bits_per_byte
from repo2lora.pretrain.corpus import iter_docs
from repo2lora.pretrain.train_lm import load_checkpoint_model
from repo2lora.reserved import normalize_distribution


def load_any(spec: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, what it is) for `default`, a model directory or a run directory."""
    path = Path(spec)
    if (path / "checkpoint" / "state.json").is_file() and not (path / "model").is_dir():
        model, tok, state = load_checkpoint_model(path)
        return model, tok, {"run": spec, "step": state["step"], "tokens_seen": state["tokens"]}
    if (path / "model" / "config.json").is_file():
        spec = str(path / "model")
    loaded = load_base_model(describe_base_model(spec))
    return loaded.model, loaded.tokenizer, {"model": spec}


def trained_distributions(specs: list[str]) -> set[str]:
    """Distributions some compared model trained on, by its pretraining manifest (the embedded
    default's `data/pretrain-manifest.json`, a model directory's `manifest.json`): their
    held-out text is left out, so no model is scored on code it saw."""
    out: set[str] = set()
    for spec in specs:
        path = Path(spec)
        candidates = [path / "manifest.json", path / "model" / "manifest.json"]
        if spec == "default":
            candidates = [embedded.DEFAULT_DIR / "data" / "pretrain-manifest.json"]
        for c in candidates:
            if not c.is_file():
                continue
            m = json.loads(c.read_text())
            if "packages" in m:  # the first default's format: top-level package -> entry
                for top, entry in m["packages"].items():
                    if entry.get("split", "train") == "train":
                        out.add(normalize_distribution(top))
                        out.add(normalize_distribution(str(entry.get("distribution", top))))
            for d in m.get("distributions", []):
                if d.get("split") == "train":
                    out.add(normalize_distribution(d["name"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="default | MODEL_DIR | RUN_DIR")
    ap.add_argument("--corpus", required=True, help="a corpus directory (its held-out split)")
    ap.add_argument("--mb", type=float, default=1.0, help="held-out text to score, in MB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seen = trained_distributions(args.models)
    held = (
        (d.package, d.text)
        for d in iter_docs(args.corpus, "heldout")
        if normalize_distribution(d.package) not in seen
    )
    docs = sample_documents(held, int(args.mb * 1e6), args.seed)
    rows = []
    for spec in args.models:
        model, tok, what = load_any(spec)
        t0 = time.perf_counter()
        res = bits_per_byte(model, tok, docs, context=args.context)
        params = sum(p.numel() for p in model.parameters())
        rows.append(
            {
                **what,
                "params": params,
                "bits_per_byte": round(res.bits_per_byte, 4),
                "bytes_per_token": round(res.bytes_per_token, 3),
                "tokens": res.tokens,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    out = {
        "corpus": args.corpus,
        "heldout_bytes": sum(len(d.encode()) for d in docs),
        "documents": len(docs),
        "xz_bits_per_byte": round(xz_bits_per_byte(docs), 4),
        "models": rows,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
