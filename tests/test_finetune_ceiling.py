"""`benchmark.finetune_ceiling` end to end on tiny datasets: a shared LoRA trained on one
built dataset, fine-tuned on each held-out repository's own source and on another's, every
variant scored on the same tasks; a held-out dataset the LoRA trained on is refused in one
line. The LoRA and the ceiling run on another base model than the datasets were built with:
neither reads chunk vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.finetune_ceiling import main
from repo2lora.models.presets import PRESETS, build_preset
from tests.cli import run_cli
from tests.test_dataset_build import _build, _repo, reserved  # noqa: F401 (a fixture)


def test_the_ceiling_scores_own_and_other_fine_tunes_and_refuses_overlap(
    tmp_path: Path,
    reserved: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    train_ds, held_ds = tmp_path / "train-ds", tmp_path / "held-ds"
    _build([_repo(tmp_path / "sample").root], train_ds, reserved)
    _build([_repo(tmp_path / n).root for n in ("alpha", "beta")], held_ds, reserved)
    # another base model than the datasets' (built with tiny-random): a directory of its own
    other = tmp_path / "other-model"
    model, tokenizer = build_preset(PRESETS["tiny-random"])
    model.save_pretrained(other)
    tokenizer.save_pretrained(other)
    lora = tmp_path / "lora"  # not the default shape: the fine-tunes go on in its own
    proc = run_cli("train", "--generator", "shared-lora", "--dataset", str(train_ds),
                   "--out", str(lora), "--model", str(other), "--steps", "2", "--rank", "4",
                   "--target-modules", "all-linear")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    args = ["--lora", str(lora), "--model", str(other), "--replay", str(train_ds),
            "--steps", "1,2", "--tasks", "2"]  # fmt: skip
    out = tmp_path / "ceiling.json"
    assert main([*args, "--dataset", str(held_ds), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert len(report["machine"]["source"]["sha"]) == 40  # the commit the numbers came from
    assert report["repositories"] == 2 and report["fine_tune"]["steps"] == [1, 2]
    variants = report["variants"]
    assert set(variants) == {"base", "shared", "own@1", "other@1", "own@2", "other@2"}
    n = variants["shared"]["all"]["tasks"]
    assert n >= 2 and all(v["all"]["tasks"] == n for v in variants.values())
    assert all(v["names"]["tasks"] == report["name_tasks"] for v in variants.values())
    assert -1.0 <= report["own@2_adapter_spread"] <= 1.0
    # the LoRA's own training data as the held-out set: refused, nothing trained
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--dataset", str(train_ds)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "the LoRA trained on: ['sample']" in err, err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:  # the held-out set replayed: its targets trained on
        main(["--lora", str(lora), "--model", str(other), "--replay", str(held_ds),
              "--dataset", str(held_ds)])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "holds held-out repositories: ['alpha', 'beta']" in err, err
    with pytest.raises(SystemExit) as exit_:
        main([*args[:-4], "--steps", "0,x", "--dataset", str(held_ds)])
    assert exit_.value.code == 2 and "give positive step counts" in capsys.readouterr().err


def test_a_packed_dataset_gives_the_same_lora_and_ceiling_without_vectors_or_repositories(
    tmp_path: Path,
    reserved: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dataset pack`: tasks, names and chunk texts without vectors, what travels to a lent
    GPU. The shared LoRA trained on the packed copy and the ceiling scored on it equal the
    originals', with the source repositories gone; a hypernetwork, which reads vectors, is
    refused on it in one line."""
    from safetensors.torch import load_file

    train_ds, held_ds = tmp_path / "train-ds", tmp_path / "held-ds"
    _build([_repo(tmp_path / "sample").root], train_ds, reserved)
    _build([_repo(tmp_path / n).root for n in ("alpha", "beta")], held_ds, reserved)
    train_pk, held_pk = tmp_path / "train-pk", tmp_path / "held-pk"
    for ds, pk, extra in ((train_ds, train_pk, ["--no-texts"]), (held_ds, held_pk, [])):
        proc = run_cli("dataset", "pack", str(ds), "--out", str(pk), "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        assert not list(pk.rglob("encoding.safetensors"))
    assert json.loads(proc.stdout) == {"out": str(held_pk), "repositories": 2, "texts": True}
    reports = []
    for ds, held in ((train_ds, held_ds), (train_pk, held_pk)):
        lora = tmp_path / f"lora-{ds.name}"
        proc = run_cli("train", "--generator", "shared-lora", "--dataset", str(ds),
                       "--out", str(lora), "--model", "tiny-random", "--steps", "2")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        args = ["--lora", str(lora), "--model", "tiny-random", "--replay", str(ds),
                "--steps", "1", "--tasks", "2", "--dataset", str(held)]  # fmt: skip
        if ds == train_pk:  # the packed copy needs no source repository
            for n in ("sample", "alpha", "beta"):
                (tmp_path / n).rename(tmp_path / f"gone-{n}")
        assert main(args) == 0
        report = json.loads(capsys.readouterr().out)
        reports.append((load_file(str(lora / "adapter_model.safetensors")), report))
    (w_a, r_a), (w_b, r_b) = reports
    assert w_a.keys() == w_b.keys() and all(w_a[k].equal(w_b[k]) for k in w_a)
    assert r_a["variants"] == r_b["variants"] and r_a["name_tasks"] == r_b["name_tasks"]
    assert set(r_a["variants"]) == {"base", "shared", "own@1", "other@1"}
    hn = ["--out", str(tmp_path / "hn"), "--model", "tiny-random", "--steps", "1"]
    proc = run_cli("train", "--generator", "code2lora-static", "--dataset", str(train_pk), *hn)
    assert proc.returncode == 1 and "has no chunk vectors (a packed copy)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bits_per_byte_compare_on_a_dataset_leaves_out_what_a_model_pretrained_on(
    tmp_path: Path,
    reserved: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`benchmark.bpb_compare --dataset`: two base models scored on the same held-out
    repositories' source (a packed copy: the texts travel, the repositories need not), and a
    repository one model pretrained a file of (by its `file-sha256.tsv`) left out, by name."""
    from benchmark.bpb_compare import main as bpb_main
    from repo2lora.tasks.dataset_build import pack_dataset

    held_ds = tmp_path / "held-ds"
    alpha, beta_repo = _repo(tmp_path / "alpha"), _repo(tmp_path / "beta")
    beta_repo.commit({"pkg/extra.py": "def beta_only(x):\n    return x * 7\n"}, "v4")
    _build([alpha.root, beta_repo.root], held_ds, reserved)
    packed = tmp_path / "held-pk"
    pack_dataset(held_ds, packed)
    models = []
    for i in range(2):
        d = tmp_path / f"model-{i}"
        model, tokenizer = build_preset(PRESETS["tiny-random"])
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
        models.append(d)
    assert bpb_main(["--dataset", str(packed), *map(str, models), "--mb", "0.01"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["left_out"] == [] and both["heldout_bytes"] > 0
    assert [r["model"] for r in both["models"]] == [str(m) for m in models]
    assert all(r["bits_per_byte"] > 0 for r in both["models"])
    # model-1 pretrained on one of beta's files (not an empty one): beta is left out
    entries = {
        e["name"]: set(e["file_sha256"])
        for e in json.loads((held_ds / "manifest.json").read_text())["training_repositories"]
    }
    only_beta = sorted(entries["beta"] - entries["alpha"])
    assert len(only_beta) == 1
    (models[1] / "file-sha256.tsv").write_text(f"{only_beta[0]}\ttrain\n")
    assert bpb_main(["--dataset", str(packed), *map(str, models), "--mb", "0.01"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["left_out"] == ["beta"] and 0 < one["heldout_bytes"] < both["heldout_bytes"]
    with pytest.raises(SystemExit) as exit_:  # not a dataset: one line, no traceback
        bpb_main(["--dataset", str(tmp_path / "nothing"), str(models[0])])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is not a built dataset" in err and "Traceback" not in err
