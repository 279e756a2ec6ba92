"""The token side of pretraining: the byte-level BPE tokenizer trained on the train split,
the train split packed into uint16 shards read back as memory maps (random packed windows by
a seed-and-step RNG), and the fixed held-out samples, prepared once per run directory."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from repo2lora.atomic import atomic_directory
from repo2lora.models.presets import EOS, SPECIAL_TOKENS
from repo2lora.pretrain.bpb import sample_documents, xz_bits_per_byte
from repo2lora.pretrain.config import PretrainConfig, PretrainError
from repo2lora.pretrain.corpus import HASHES, Corpus, iter_docs, read_manifest

SHARD_TOKENS = 1 << 27  # 256 MiB of uint16 per shard


def train_tokenizer(texts: list[str], cfg: PretrainConfig) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the given training texts; special tokens as the presets."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        model_max_length=cfg.context,
    )


def pack_tokens(tokenizer: PreTrainedTokenizerFast, texts: Any, folder: Path) -> list[int]:
    """Every document's tokens followed by EOS, as uint16 shards `folder/train-NNNNN.bin` of at
    most SHARD_TOKENS tokens; returns each shard's token count."""
    if len(tokenizer) > 65535:
        raise PretrainError("the tokenizer has more than 65,535 tokens; uint16 shards need fewer")
    eos = tokenizer.eos_token_id
    counts: list[int] = []
    fh: Any = None

    def next_shard() -> Any:
        if fh is not None:
            fh.close()
        counts.append(0)
        return (folder / f"train-{len(counts) - 1:05d}.bin").open("wb")

    fh = next_shard()
    batch: list[str] = []

    def flush() -> Any:
        nonlocal fh
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            arr = np.asarray([*ids, eos], dtype=np.uint16)
            if counts[-1] + arr.size > SHARD_TOKENS:
                fh = next_shard()
            fh.write(arr.tobytes())
            counts[-1] += arr.size
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= 512:
            flush()
    flush()
    fh.close()
    return counts


class TokenShards:
    """The train split's shards as memory maps; `window(k)` draws the k-th random window."""

    def __init__(self, folder: Path, counts: list[int]) -> None:
        self.maps = [
            np.memmap(folder / f"train-{i:05d}.bin", dtype=np.uint16, mode="r", shape=(n,))
            for i, n in enumerate(counts)
            if n > 0
        ]
        self.sizes = np.asarray([m.shape[0] for m in self.maps], dtype=np.int64)
        self.total = int(self.sizes.sum())

    def batch(self, step: int, seed: int, batch_size: int, context: int) -> torch.Tensor:
        rng = np.random.default_rng([seed, step])
        usable = np.maximum(self.sizes - context - 1, 0)
        p = usable / usable.sum()
        rows = []
        for shard in rng.choice(len(self.maps), size=batch_size, p=p):
            s = int(rng.integers(0, usable[shard]))
            rows.append(self.maps[shard][s : s + context + 1].astype(np.int64))
        return torch.from_numpy(np.stack(rows))


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


CorpusSource = str | Path | Callable[[], Corpus]


def _corpus_texts(
    corpus: CorpusSource,
) -> tuple[Callable[[], Any], list[tuple[str, str]], dict[str, Any], str]:
    """(train texts generator, held-out (distribution, text) pairs, manifest, fingerprint)."""
    if callable(corpus):
        c = corpus()
        return (
            lambda: (d.text for d in c.train),
            [(d.package, d.text) for d in c.val],
            dict(c.manifest),
            _fingerprint([[d.path, len(d.text)] for d in c.train + c.val]),
        )
    manifest = read_manifest(corpus)
    fp = _fingerprint(
        [s.get("sha256") for s in manifest["shards"]["train"] + manifest["shards"]["heldout"]]
    )
    return (
        lambda: (d.text for d in iter_docs(corpus, "train")),
        [(d.package, d.text) for d in iter_docs(corpus, "heldout")],
        manifest,
        fp,
    )


def prepare_data(
    out: Path, corpus: CorpusSource, cfg: PretrainConfig, tokenizer_dir: Path | None = None
) -> dict[str, Any]:
    """Tokenizer, packed train shards and the held-out samples in `out/data`, made once and
    reused on resume; a run prepared from another corpus or tokenizer setting is refused.
    `tokenizer_dir` takes that tokenizer instead of training one (a warm restart)."""
    data = out / "data"
    meta_path = data / "meta.json"
    want = {
        "vocab_size": cfg.vocab_size,
        "tokenizer_sample_bytes": cfg.tokenizer_sample_bytes,
        "eval_bytes": cfg.eval_bytes,
        "report_bytes": cfg.report_bytes,
        "seed": cfg.seed,
    }
    if meta_path.is_file():
        meta = dict(json.loads(meta_path.read_text()))
        if meta.get("data_config") != want:
            raise PretrainError(
                f"{out} was prepared with another tokenizer or sample setting "
                f"({meta.get('data_config')}); use the same options or a new --out"
            )
        if not callable(corpus):
            fp = _corpus_texts(corpus)[3]
            if meta.get("corpus_fingerprint") != fp:
                raise PretrainError(
                    f"{out} was prepared from another corpus; pass the same --corpus or a new --out"
                )
        return meta
    train_texts, heldout, manifest, fp = _corpus_texts(corpus)
    with atomic_directory(data) as tmp:
        sample = sample_documents(
            ((str(i % 997), t) for i, t in enumerate(train_texts())),
            cfg.tokenizer_sample_bytes,
            cfg.seed,
        )
        tokenizer = (
            PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
            if tokenizer_dir is not None
            else train_tokenizer(sample, cfg)
        )
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        counts = pack_tokens(tokenizer, train_texts(), tmp)
        curve = sample_documents(heldout, cfg.eval_bytes, cfg.seed)
        report = sample_documents(heldout, cfg.report_bytes, cfg.seed + 1)
        for name, docs in (("heldout-curve", curve), ("heldout-report", report)):
            with (tmp / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(t) + "\n" for t in docs)
        report_tokens = sum(
            len(x) for x in tokenizer(report, add_special_tokens=False)["input_ids"]
        )
        report_bytes = sum(len(t.encode()) for t in report)
        meta = {
            "data_config": want,
            "corpus_fingerprint": fp,
            "train_tokens": int(sum(counts)),
            "shards": counts,
            "heldout_bytes_curve": sum(len(t.encode()) for t in curve),
            "heldout_bytes_report": report_bytes,
            "heldout_bytes_per_token": report_bytes / max(1, report_tokens),
            "tokenizer_sha256": hashlib.sha256(
                (tmp / "tokenizer" / "tokenizer.json").read_bytes()
            ).hexdigest(),
            "xz_bits_per_byte": xz_bits_per_byte(report),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if not callable(corpus) and (Path(corpus) / HASHES).is_file():  # for contamination checks
            shutil.copy(Path(corpus) / HASHES, tmp / HASHES)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def heldout_sample(out: Path, name: str) -> list[str]:
    path = out / "data" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
