"""Pretraining the default model: corpus split by package, BPE tokenizer, exact resume, and a
result that loads as a base model."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
from safetensors.torch import load_file

from repo2lora.models import describe_base_model, load_base_model
from repo2lora.pretrain.corpus import Corpus, SourceDoc, gather_corpus
from repo2lora.pretrain.train_lm import PretrainConfig, pretrain

CFG = PretrainConfig(
    vocab_size=400,
    hidden_size=32,
    layers=1,
    heads=2,
    kv_heads=1,
    intermediate=64,
    context=64,
    batch_size=4,
    steps=20,
    warmup_steps=5,
    eval_every=10,
    eval_batches=2,
    checkpoint_every=10,
    tokenizer_sample_bytes=200_000,
)


def _small_corpus() -> Corpus:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = [
        SourceDoc(f"stdlib:{p.stem}", p.name, p.read_text())
        for p in sorted(stdlib.glob("[a-c]*.py"))[:12]
    ]
    return Corpus(docs[2:], docs[:2], {"packages": {d.package: {} for d in docs}})


def test_corpus_is_split_by_package() -> None:
    corpus = gather_corpus(max_bytes=3_000_000, val_share=0.2)
    train_pk = {d.package for d in corpus.train}
    val_pk = {d.package for d in corpus.val}
    assert train_pk and val_pk and not train_pk & val_pk
    assert len({hash(d.text) for d in corpus.train + corpus.val}) == len(corpus.train + corpus.val)
    assert not any(d.package in ("repo2lora", "benchmark") for d in corpus.train)


def test_pretrain_resumes_exactly_and_loads_as_a_base_model(tmp_path: Path) -> None:
    first = pretrain(tmp_path / "a", _small_corpus, CFG, stop_after=10)  # "killed" at 10
    assert first.steps == 10 and not (tmp_path / "a" / "model").exists()
    resumed = pretrain(tmp_path / "a", _small_corpus, CFG)  # continues from step 10 to 20
    whole = pretrain(tmp_path / "b", _small_corpus, CFG)
    assert resumed.steps == whole.steps == 20 and resumed.tokens_seen == whole.tokens_seen
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    log = (tmp_path / "b" / "pretrain_log.jsonl").read_text()
    assert '"event": "eval"' in log and '"event": "checkpoint"' in log
    info = describe_base_model(str(tmp_path / "b" / "model"))
    model = load_base_model(info)
    assert not info.untrained and len(model.tokenizer) >= 260
    card = (tmp_path / "b" / "model" / "model_card.json").read_text()
    assert '"tokens_seen"' in card and '"held_out_loss_nats_per_token"' in card
