"""The static hypernetwork: set semantics, padding masks, layer conditioning, checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from repo2lora.hypernet.checkpoint import (
    build_hypernet,
    default_hypernet_config,
    load_hypernet,
    save_hypernet,
)
from repo2lora.models import describe_base_model
from repo2lora.models.presets import PRESETS, Preset
from repo_encoder.errors import UserError

INFO = describe_base_model("tiny-random")


def _vecs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, INFO.config.hidden_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", ["attention", "meanmax"])
def test_state_ignores_chunk_order_and_padding(pooling: str) -> None:
    cfg = dataclasses.replace(default_hypernet_config(INFO), pooling=pooling)
    net = build_hypernet(cfg, INFO)
    v = _vecs(7)
    with torch.no_grad():
        s = net.encode(v)
        shuffled = net.encode(v[torch.randperm(7)])
        padded = torch.cat([v, torch.randn(3, v.shape[1]) * 100])[None]
        mask = torch.tensor([[True] * 7 + [False] * 3])
        s_pad = net.encode(padded, mask)[0]
    torch.testing.assert_close(s, shuffled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_pad, atol=1e-5, rtol=1e-5)


def test_every_target_gets_a_pair_and_layers_differ_unless_shared() -> None:
    for mode in ("embedding", "shared"):
        cfg = dataclasses.replace(default_hypernet_config(INFO), layer_conditioning=mode)
        net = build_hypernet(cfg, INFO)
        with torch.no_grad():
            w = net.generate(net.encode(_vecs(5)))
        n_layers = INFO.config.num_hidden_layers
        assert len(w.tensors) == n_layers * len(cfg.target_modules)
        a0, _ = w.tensors["model.layers.0.self_attn.q_proj"]
        a1, _ = w.tensors["model.layers.1.self_attn.q_proj"]
        assert a0.shape == (cfg.rank, INFO.config.hidden_size)
        assert torch.equal(a0, a1) == (mode == "shared")


def test_empty_repository_has_a_state() -> None:
    net = build_hypernet(default_hypernet_config(INFO), INFO)
    with torch.no_grad():
        s = net.encode(torch.zeros(0, INFO.config.hidden_size))
    assert torch.isfinite(s).all()


def test_checkpoint_roundtrip_and_base_mismatch(tmp_path: Path) -> None:
    net = build_hypernet(default_hypernet_config(INFO), INFO)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    save_hypernet(net, INFO, tmp_path / "hn")
    loaded = load_hypernet(str(tmp_path / "hn"), INFO)
    assert loaded.key.startswith("ckpt-") and not loaded.untrained
    v = _vecs(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net.encode(v), net.encode(v))
    other = Preset("other", {**PRESETS["tiny-random"].config, "hidden_size": 32}, seed=0)
    from repo2lora.models.loading import _preset_info

    with pytest.raises(UserError, match="trained for base model"):
        load_hypernet(str(tmp_path / "hn"), _preset_info(other, "other"))


def test_untrained_default_is_deterministic() -> None:
    a = load_hypernet(None, INFO)
    b = load_hypernet(None, INFO)
    assert a.key == b.key
    v = _vecs(3)
    with torch.no_grad():
        torch.testing.assert_close(a.net.encode(v), b.net.encode(v), rtol=0, atol=0)


def test_standardization_is_fitted_saved_and_removes_the_shared_direction(tmp_path: Path) -> None:
    cfg = dataclasses.replace(default_hypernet_config(INFO), standardize=True)
    net = build_hypernet(cfg, INFO)
    shared = torch.randn(INFO.config.hidden_size) * 50  # every vector's dominant direction
    corpus = _vecs(64) + shared
    net.encoder.fit_standardization(corpus)
    z = net.encoder.standardized(corpus)
    assert z.mean(0).abs().max() < 1e-4 and (z.std(0) - 1).abs().max() < 1e-4
    save_hypernet(net, INFO, tmp_path / "hn")
    loaded = load_hypernet(str(tmp_path / "hn"), INFO).net
    torch.testing.assert_close(loaded.encoder.input_mean, net.encoder.input_mean)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(corpus[:5]), net.encode(corpus[:5]))
        # two repositories that differ only off the shared direction get different states
        a, b = loaded.encode(_vecs(8, 1) + shared), loaded.encode(_vecs(8, 2) + shared)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) < 0.99
