"""The embedded default: its card lists every file's sha256, the files are checked before use,
a default present in the package is what every command gets without --model (with its shipped
hypernetwork), and `repo2lora models` says what is installed. The default here is a tiny model
written to a temporary directory in the same layout the package ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from repo2lora.cli import EXIT_USER_ERROR, main
from repo2lora.hypernet.checkpoint import (
    build_hypernet,
    default_hypernet_config,
    load_hypernet,
    save_hypernet,
)
from repo2lora.models import embedded
from repo2lora.models.loading import describe_base_model, load_base_model
from repo_encoder.errors import UserError
from tests.gitrepo import SAMPLE_V1, GitRepo


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A default in the package layout: model files, hypernets/{static,evo}, card.json."""
    root = tmp_path / "default"
    tiny = load_base_model(describe_base_model("tiny-random"))
    tiny.model.save_pretrained(str(root))
    tiny.tokenizer.save_pretrained(str(root))
    for generator, rel in embedded.HYPERNETS.items():
        cfg = default_hypernet_config(tiny.info)
        cfg = type(cfg)(**{**cfg.__dict__, "generator": generator, "seed": 7})
        net = build_hypernet(cfg, tiny.info)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.01)
        save_hypernet(net, tiny.info, root / rel)
    card = {
        "model": {"architecture": "llama", "params": 1000, "tokens_seen": 5, "held_out_loss": 3.0},
        "hypernets": {g: {"path": rel, "steps": 1} for g, rel in embedded.HYPERNETS.items()},
    }
    embedded.write_card(root, card)
    monkeypatch.setattr(embedded, "DEFAULT_DIR", root)
    return root


def test_card_lists_every_file_and_a_changed_file_is_refused(shipped: Path) -> None:
    card = json.loads((shipped / embedded.CARD).read_text())
    listed = set(card["files"])
    assert {"model.safetensors", "config.json", "hypernets/evo/hypernet.safetensors"} <= listed
    assert card["total_bytes"] == sum(f["bytes"] for f in card["files"].values())
    assert embedded.verify(shipped)["model"]["params"] == 1000
    weights = shipped / "hypernets" / "evo" / "hypernet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"damaged.*reinstall"):
        embedded.verify(shipped)
    weights.unlink()
    with pytest.raises(UserError, match="missing"):
        embedded.verify(shipped)


def test_without_model_every_command_gets_the_default_and_its_hypernetwork(shipped: Path) -> None:
    info = describe_base_model(None)
    assert info.model_dir == shipped and not info.untrained
    assert info.description.startswith("embedded default model")
    hyper = load_hypernet(None, info)
    assert not hyper.untrained and hyper.description.startswith("embedded default")
    assert hyper.net.generator_name == "code2lora-evo"
    # another base model does not get the default's hypernetwork
    assert load_hypernet(None, describe_base_model("tiny-random")).untrained


def test_the_default_follows_history_with_the_network_its_card_names(
    shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The card records which shipped network follows history, by which state: `update`,
    `complete` and the server follow with it (the evolving network's snapshot state at every
    commit, or the static network's), and `--evo` still gets the evolving state."""
    from lsp_server.session import resolve_models
    from repo2lora.hypernet.checkpoint import load_history_hypernet
    from repo2lora.update import follows_static, update_repository

    info = describe_base_model(None)
    evo_key = load_hypernet(None, info).key
    unrecorded = load_history_hypernet(None, info)  # no record: the evolving state
    assert unrecorded.key == evo_key and not follows_static(unrecorded)
    static_dir = str(shipped / embedded.HYPERNETS["code2lora-static"])
    static_key = load_hypernet(static_dir, info).key
    repo = GitRepo(shipped.parent / "repo")
    repo.commit(SAMPLE_V1, "v1")
    card = json.loads((shipped / "card.json").read_text())
    for record, key in (
        ({"generator": "code2lora-static", "evidence": None}, static_key),
        ({"generator": "code2lora-evo", "state": "static", "evidence": None}, evo_key),
    ):
        card[embedded.UPDATE_FOLLOWS] = record
        (shipped / "card.json").write_text(json.dumps(card))
        chosen = load_history_hypernet(None, info)
        assert chosen.key == key and follows_static(chosen)
        assert resolve_models(None, None).hyper.key == key
        res = update_repository(repo.root)
        assert res.followed == "static" and res.hypernet_key == key
        assert res.hypernet.startswith("embedded default")
        assert Path(res.adapter_path).name.startswith("static-")
    assert load_history_hypernet(static_dir, info).follows_static is None  # as its kind says
    assert load_history_hypernet(None, describe_base_model("tiny-random")).untrained
    evo = update_repository(repo.root, static_every_commit=False)
    assert evo.followed == "evo" and evo.hypernet_key == evo_key
    assert main(["models", "--json"]) == 0  # the card's record is listed
    listed = json.loads(capsys.readouterr().out)["default"]
    assert listed[embedded.UPDATE_FOLLOWS]["state"] == "static"
    assert main(["models"]) == 0
    assert "follows history with code2lora-evo's static state" in capsys.readouterr().out


def test_models_lists_the_default_and_exits_1_when_it_is_damaged(
    shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["default"]["verified"] and out["default"]["path"] == str(shipped)
    assert {p["name"] for p in out["presets"]} >= {"tiny-random"}
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "verified (sha256)" in text and "code2lora-evo" in text
    (shipped / "config.json").write_text((shipped / "config.json").read_text() + " ")
    assert main(["models"]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    repo = GitRepo(shipped.parent / "repo")
    repo.commit(SAMPLE_V1, "v1")
    assert main(["snapshot", str(repo.root)]) == EXIT_USER_ERROR  # one clear line, no traceback
    assert "embedded default is damaged" in capsys.readouterr().err


def test_the_shipped_default_trained_on_nothing_reserved_for_evaluation() -> None:
    """Against ../shared/eval-reserved.tsv as it is at test time: no trained-on distribution of
    the shipped base model and no training repository of its hypernetworks is reserved. The
    reserved names the pretraining manifest does hold are only its records of keeping them
    out: `refused_reserved_distributions` (never downloaded) and `reserved_files_dropped`
    (vendored copies dropped, counted per reserved distribution)."""
    from repo2lora.reserved import DEFAULT_RESERVED_PATH, load_reserved

    reserved = load_reserved(DEFAULT_RESERVED_PATH)
    data = embedded.DEFAULT_DIR / "data"
    pretrain = json.loads((data / "pretrain-manifest.json").read_text())
    trained = [d["name"] for d in pretrain["distributions"]]
    assert len(trained) > 100 and not [n for n in trained if reserved.distribution_reserved(n)]
    refused = [s.split("==")[0] for s in pretrain["refused_reserved_distributions"]]
    assert refused and all(reserved.distribution_reserved(n) for n in refused)
    assert all(reserved.distribution_reserved(n) for n in pretrain["reserved_files_dropped"])
    hypernets = json.loads((data / "hypernet-manifest.json").read_text())
    repos = [(r["name"], r.get("url") or r["name"]) for r in hypernets["train"]]
    assert len(repos) >= 100
    assert not [
        n
        for n, url in repos
        if reserved.repository_reserved(url) or reserved.name_reserved(n.split("/")[-1])
    ]
    for rel in embedded.HYPERNETS.values():  # each card's own list, what the check reads
        card = json.loads((embedded.DEFAULT_DIR / rel / "hypernet.json").read_text())
        assert {r["name"] for r in card["training_repositories"]} <= {n for n, _ in repos}
