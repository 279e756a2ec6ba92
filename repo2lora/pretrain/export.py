"""Packs a finished pretraining run for the trip back from a lent GPU machine: the weights as
bf16 safetensors shards of at most 16 MiB, the card and the held-out curve as files of their
own, and every other small file (config, tokenizer, shard index, data manifest) in one tar, so
the whole model comes back in at most 8 files.

    python -m repo2lora.pretrain.export --run RUN --out DIR [--shard-mb 16] [--max-files 8]
    python -m repo2lora.pretrain.export --unpack DIR --out MODEL_DIR   (back to a model dir)
    python -m repo2lora.pretrain.export --checkpoint RUN --out DIR   (a warm-start directory)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

SIDE_FILES = ("model_card.json", "val_bpb.png")
BUNDLE = "model-files.tar"


def export_run(
    run: str | Path, out: str | Path, shard_mb: int = 16, max_files: int = 8
) -> list[str]:
    """Write the run's model to `out` as described above; returns the files written. Raises
    ValueError when the model does not fit in `max_files` files."""
    model_dir = Path(run) / "model"
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{run} has no finished model (model/config.json); finish the run first")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
        model.save_pretrained(tmp, max_shard_size=f"{shard_mb}MB", safe_serialization=True)
        shards = sorted(p for p in Path(tmp).glob("*.safetensors"))
        written = [p.name for p in shards]
        others = [p for p in Path(tmp).iterdir() if p.suffix != ".safetensors"]
        others += [
            p
            for p in model_dir.iterdir()
            if p.is_file()
            and p.suffix not in (".safetensors", ".bin")
            and p.name not in SIDE_FILES
            and p.name != "config.json"
        ]
        if len(shards) + len(SIDE_FILES) + 1 > max_files:
            raise ValueError(
                f"the model needs {len(shards)} shards of {shard_mb} MiB; with its card, curve "
                f"and {BUNDLE} that is over {max_files} files: train a smaller model"
            )
        for p in shards:
            shutil.copy(p, dest / p.name)
        with tarfile.open(dest / BUNDLE, "w") as tf:
            for p in others:
                tf.add(p, arcname=p.name)
        written.append(BUNDLE)
        for name in SIDE_FILES:
            if (model_dir / name).is_file():
                shutil.copy(model_dir / name, dest / name)
                written.append(name)
    return written


def export_checkpoint(run: str | Path, out: str | Path) -> list[str]:
    """A warm-start directory from a run's last checkpoint: its weights and state (with the
    config) and the run's tokenizer, small enough to commit at a milestone (no optimizer)."""
    src = Path(run)
    ckpt = src / "checkpoint"
    if not (ckpt / "state.json").is_file():
        raise ValueError(f"{run} has no checkpoint yet; let the run reach its first checkpoint")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("model.safetensors", "state.json"):
        shutil.copy(ckpt / name, dest / name)
        written.append(name)
    for p in sorted((src / "data" / "tokenizer").iterdir()):
        shutil.copy(p, dest / p.name)
        written.append(p.name)
    return written


def unpack(exported: str | Path, model_dir: str | Path) -> Path:
    """Rebuild a loadable model directory from an export."""
    src, dest = Path(exported), Path(model_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src / BUNDLE) as tf:
        tf.extractall(dest, filter="data")
    for p in src.iterdir():
        if p.suffix == ".safetensors" or p.name in SIDE_FILES:
            shutil.copy(p, dest / p.name)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repo2lora.pretrain.export", description=__doc__)
    ap.add_argument("--run", help="a pretraining run directory with a finished model")
    ap.add_argument("--unpack", help="an export directory to turn back into a model directory")
    ap.add_argument("--checkpoint", help="a run directory: its last checkpoint as a warm start")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shard-mb", type=int, default=16)
    ap.add_argument("--max-files", type=int, default=8)
    args = ap.parse_args(argv)
    try:
        if args.checkpoint:
            print(json.dumps({"files": export_checkpoint(args.checkpoint, args.out)}))
        elif args.unpack:
            print(json.dumps({"model": str(unpack(args.unpack, args.out))}))
        elif args.run:
            print(
                json.dumps({"files": export_run(args.run, args.out, args.shard_mb, args.max_files)})
            )
        else:
            ap.error("give --run or --unpack")
    except (ValueError, OSError, tarfile.TarError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
