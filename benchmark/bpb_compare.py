"""Compares base models in bits per byte on the same held-out text, by the same code: each
model's total NLL over a fixed seeded sample of a corpus' held-out split divided by its UTF-8
bytes and ln 2, with xz -9e's bits per byte on that text beside them. Held-out
distributions that any compared model's pretraining manifest lists as training data are left
out (the first default trained on some of them). A model is the embedded
default (`default`), a model directory, or a pretraining run directory (its last checkpoint).
Prints one JSON object.

With `--dataset` instead of `--corpus`, the text is a built (or packed) dataset's repository
source, file by file from its chunk texts: the held-out pool repositories, say, which models
pretrained on different corpora (the shipped PyPI one, a GPU machine's installed packages)
can be compared on without either corpus at hand. A repository sharing a `.py` file's hash
with a compared model's pretraining files is left out, and named.

    python -m benchmark.bpb_compare --corpus runs/corpus default runs/pt [--mb 1.0]
    python -m benchmark.bpb_compare --dataset HELD_OUT_DATASET default MODEL_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from benchmark.contamination import base_model_manifests
from repo2lora.models import describe_base_model, embedded, load_base_model
from repo2lora.pretrain.bpb import bits_per_byte, sample_documents, xz_bits_per_byte
from repo2lora.pretrain.corpus import iter_docs
from repo2lora.pretrain.train_lm import load_checkpoint_model
from repo2lora.reserved import normalize_distribution
from repo2lora.tasks.dataset_build import MANIFEST, built_repo_dirs, load_built_repo
from repo_encoder.errors import UserError


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


def model_dir(spec: str) -> Path:
    """Where a compared model's files (and manifests) are."""
    if spec == "default":
        return embedded.DEFAULT_DIR
    path = Path(spec)
    return path / "model" if (path / "model" / "config.json").is_file() else path


# the sha256 of an empty file's text: every repository and corpus has one, which says nothing
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def dataset_documents(dataset: str, specs: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(repository, file text) pairs of a dataset's repositories, each file's chunk texts in
    order, and the repositories left out because a compared model pretrained on one of their
    files (by the dataset manifest's `file_sha256`)."""
    dirs = built_repo_dirs(dataset)  # a UserError when it is not a dataset
    manifests = [m for spec in specs for m in base_model_manifests(model_dir(spec))]
    seen = frozenset().union(*(m.hashes for m in manifests)) - {EMPTY_SHA256}
    doc = json.loads((Path(dataset) / MANIFEST).read_text())
    hashes = {e["name"]: set(e.get("file_sha256", ())) for e in doc["training_repositories"]}
    docs: list[tuple[str, str]] = []
    left_out: list[str] = []
    for d in dirs:
        repo = load_built_repo(d)
        name = str(repo.summary["name"])
        if hashes.get(name, set()) & seen:
            left_out.append(name)
            continue
        files: dict[str, list[str]] = {}
        for path, text in repo.chunk_texts():
            files.setdefault(path, []).append(text)
        docs += [(name, "\n".join(chunks)) for chunks in files.values()]
    return docs, left_out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="default | MODEL_DIR | RUN_DIR")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="a corpus directory (its held-out split)")
    source.add_argument(
        "--dataset", help="a built or packed dataset (its repositories' source, file by file)"
    )
    ap.add_argument("--mb", type=float, default=1.0, help="held-out text to score, in MB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        return compare(args)
    except UserError as e:  # a bad --corpus or --dataset: one line, no traceback
        ap.exit(2, f"bpb_compare: error: {e}\n")


def compare(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    left_out: list[str] = []
    held: Iterable[tuple[str, str]]
    if args.dataset is not None:
        held, left_out = dataset_documents(args.dataset, args.models)
    else:
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
        model.to("cuda" if torch.cuda.is_available() else "cpu")  # the GPU when there is one
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
        **(
            {"dataset": args.dataset, "left_out": left_out}
            if args.dataset
            else {"corpus": args.corpus}
        ),
        "heldout_bytes": sum(len(d.encode()) for d in docs),
        "documents": len(docs),
        "xz_bits_per_byte": round(xz_bits_per_byte(docs), 4),
        "models": rows,
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
