"""Pretraining: bits per byte measured right, the model sized from the budget, exact resume,
a changed config refused on resume, a result that loads as a base model, and the GPU
script run on the CPU with a tiny config so it cannot rot."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import sysconfig
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerFast

from repo2lora.models import describe_base_model, load_base_model
from repo2lora.pretrain.bpb import bits_per_byte, xz_bits_per_byte
from repo2lora.pretrain.budget import config_for_budget, count_params, model_shape, plan_budget
from repo2lora.pretrain.config import PretrainConfig, PretrainError
from repo2lora.pretrain.corpus import Corpus, SourceDoc
from repo2lora.pretrain.export import export_checkpoint
from repo2lora.pretrain.tokens import prepare_data
from repo2lora.pretrain.train_lm import pretrain
from tests.cli import ENV
from tests.test_dataset_build import reserved  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent

# what the device machine lacks (KINDS.md's package list); datasketch travels as a wheel
LACKING_ON_THE_DEVICE = frozenset(
    {"tree_sitter", "tree_sitter_python", "git", "sqlite_utils", "pygls", "lsprotocol",
     "watchdog", "rapidfuzz", "bm25s"}
)  # fmt: skip
TINY_PRETRAIN = ["--vocab", "400", "--context", "64", "--batch-size", "4", "--eval-every", "5",
                 "--tokens", "6000", "--precision", "fp32"]  # fmt: skip

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
    eval_bytes=20_000,
    report_bytes=30_000,
    checkpoint_every=10,
    tokenizer_sample_bytes=200_000,
    precision="fp32",
)


def _small_corpus() -> Corpus:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = [
        SourceDoc(f"stdlib:{p.stem}", p.name, p.read_text())
        for p in sorted(stdlib.glob("[a-c]*.py"))[:12]
    ]
    return Corpus(docs[2:], docs[:2], {"packages": {d.package: {} for d in docs}})


class _Uniform(torch.nn.Module):
    """A model whose next-token distribution is uniform over V tokens."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor) -> object:
        class Out:
            logits = torch.zeros(*input_ids.shape, self.vocab)

        return Out()


def test_bits_per_byte_counts_every_token_once_over_utf8_bytes() -> None:
    from repo2lora.models.presets import byte_tokenizer

    tok = byte_tokenizer()
    docs = ["def f(x):\n    return x\n", "naïve = 'é'\n" * 30, "pass\n"]
    res = bits_per_byte(_Uniform(len(tok)), tok, docs, context=16, batch_size=3)
    n_tokens = sum(len(tok(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs) - 1
    assert res.tokens == n_tokens
    assert res.bytes == sum(len(d.encode()) for d in docs)
    assert res.bits_per_byte == pytest.approx(n_tokens * math.log2(len(tok)) / res.bytes)
    assert 0 < xz_bits_per_byte(docs * 20) < 8


def test_the_model_is_sized_from_the_budget() -> None:
    params, tokens = plan_budget(flops_per_second=1e12, seconds=3600)
    assert tokens == 20 * params and 6 * params * tokens == pytest.approx(3.6e15, rel=1e-3)
    for target in (2e6, 2e7, 1.5e8):
        s = model_shape(int(target), 8192)
        n = count_params(s["hidden_size"], s["layers"], s["heads"], s["kv_heads"],
                         s["intermediate"], 8192)  # fmt: skip
        assert 0.5 < n / target < 2.0
    cfg, plan = config_for_budget(PretrainConfig(batch_size=8, context=256), 40_000_000, 0, None)
    assert plan["target_params"] == 2_000_000 and cfg.steps == 40_000_000 // (8 * 256)
    small, _ = config_for_budget(PretrainConfig(), 400_000_000, 0, None, max_params=3_000_000)
    assert small.hidden_size < cfg.hidden_size * 4 and small.steps > cfg.steps


def test_pretrain_resumes_exactly_and_loads_as_a_base_model(tmp_path: Path) -> None:
    first = pretrain(tmp_path / "a", _small_corpus, CFG, stop_after=10)  # "killed" at 10
    assert first.steps == 10 and not (tmp_path / "a" / "model").exists()
    with pytest.raises(PretrainError, match="another config"):
        pretrain(tmp_path / "a", _small_corpus, replace(CFG, lr=3e-3))
    resumed = pretrain(tmp_path / "a", _small_corpus, CFG)  # continues from step 10 to 20
    whole = pretrain(tmp_path / "b", _small_corpus, CFG)
    assert resumed.steps == whole.steps == 20 and resumed.tokens_seen == whole.tokens_seen
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    events = [
        json.loads(x) for x in (tmp_path / "b" / "pretrain_log.jsonl").read_text().splitlines()
    ]
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and all(0 < e["bits_per_byte"] < 8 for e in evals)
    info = describe_base_model(str(tmp_path / "b" / "model"))
    model = load_base_model(info)
    assert not info.untrained and len(model.tokenizer) >= 260
    card = json.loads((tmp_path / "b" / "model" / "model_card.json").read_text())
    assert card["tokens_seen"] == whole.tokens_seen and card["held_out_bits_per_byte"] > 0
    assert (
        card["held_out_xz_bits_per_byte"] > 0
        and (tmp_path / "b" / "model" / "val_bpb.png").is_file()
    )
    (tmp_path / "c").mkdir()
    prepare_data(tmp_path / "c", _small_corpus, CFG)  # data made, no checkpoint yet
    with pytest.raises(PretrainError, match="another tokenizer"):
        pretrain(tmp_path / "c", _small_corpus, replace(CFG, vocab_size=500))


def test_a_warm_start_continues_from_committed_weights(tmp_path: Path) -> None:
    pretrain(tmp_path / "a", _small_corpus, CFG, stop_after=10)
    export_checkpoint(tmp_path / "a", tmp_path / "warm")  # what a milestone commit holds
    with pytest.raises(PretrainError, match="another config"):
        pretrain(tmp_path / "x", _small_corpus, replace(CFG, lr=3e-3), warm_start=tmp_path / "warm")
    res = pretrain(tmp_path / "w", _small_corpus, CFG, warm_start=tmp_path / "warm")
    assert res.steps == CFG.steps and res.tokens_seen == CFG.steps * CFG.batch_size * CFG.context
    tok_w = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "w" / "model"))
    tok_a = PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "warm"))
    assert tok_w.get_vocab() == tok_a.get_vocab()


def test_pretraining_imports_only_what_the_gpu_machine_has() -> None:
    """The device machine has torch, transformers, tokenizers, safetensors and numpy only."""
    code = (
        "import sys; import repo2lora.cli, repo2lora.pretrain.train_lm, "
        "repo2lora.pretrain.export, repo2lora.pretrain.budget; "
        "bad = {'peft','tree_sitter','git','sqlite_utils','pygls','rich','datasketch',"
        "'matplotlib','bm25s','rapidfuzz','watchdog'} & {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_device_script_runs_on_the_cpu_with_a_tiny_config(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "train").mkdir(parents=True)
    (corpus / "heldout").mkdir()
    docs = _small_corpus()
    for split, items in (("train", docs.train), ("heldout", docs.val)):
        with (corpus / split / "shard-00000.jsonl").open("w") as fh:
            for d in items:
                fh.write(json.dumps({"d": d.package, "p": d.path, "t": d.text}) + "\n")
    manifest = {"format": 1, "config": {}, "distributions": [],
                "shards": {s: [{"file": f"{s}/shard-00000.jsonl", "sha256": s}]
                           for s in ("train", "heldout")}}  # fmt: skip
    (corpus / "corpus.json").write_text(json.dumps(manifest))
    archive = tmp_path / "corpus.tar.xz"
    with tarfile.open(archive, "w:xz") as tf:
        tf.add(corpus, arcname="corpus")
    out = tmp_path / "out"
    out.mkdir()
    env = {**ENV, "OUT": str(out), "PYTHON": sys.executable, "MAX_PARAMS": "60000",
           "DATASETS": str(tmp_path / "no-datasets.tar.xz"),
           "WHEELS": str(tmp_path / "no-wheels")}  # fmt: skip
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "pretrain_on_device.sh"), str(archive), "0.1",
         *TINY_PRETRAIN],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and "model_card.json" in files and "model-files.tar" in files
    assert any(f.endswith(".safetensors") for f in files)
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in files)
    from repo2lora.pretrain.export import unpack

    model_dir = unpack(out, tmp_path / "model")
    loaded = load_base_model(describe_base_model(str(model_dir)))
    card = json.loads((out / "model_card.json").read_text())
    assert sum(p.numel() for p in loaded.model.parameters()) == card["params"]
    assert json.loads((out / "result.json").read_text())["tokens_seen"] == card["tokens_seen"]


def _installed_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The device script's environment for `installed`: a reserved list naming tqdm, no wheels
    to install, four small installed distributions (tqdm among them), and a sitecustomize
    that logs every Python process's imported top-level modules."""
    recorder = tmp_path / "recorder"
    recorder.mkdir(exist_ok=True)
    (recorder / "sitecustomize.py").write_text(
        "import atexit, os, sys\n"
        "def _dump():\n"
        "    with open(os.environ['IMPORT_LOG'], 'a') as fh:\n"
        "        fh.write(' '.join(sorted({m.split('.')[0] for m in sys.modules})) + '\\n')\n"
        "atexit.register(_dump)\n"
    )
    device_reserved = tmp_path / "device-reserved.tsv"
    device_reserved.write_text("distribution\timport_names\tgithub\ntqdm\ttqdm\ttqdm/tqdm\n")
    (tmp_path / "no-wheels").mkdir(exist_ok=True)
    return {
        **ENV,
        "PYTHON": sys.executable,
        "MAX_PARAMS": "60000",
        "RESERVED": str(device_reserved),
        "WHEELS": str(tmp_path / "no-wheels"),
        "CORPUS_OPTIONS": "--no-stdlib --installed-only pathspec,pluggy,smmap,tqdm "
        "--heldout-share 0.5",
        "PYTHONPATH": str(recorder),
        "IMPORT_LOG": str(tmp_path / "imports.log"),
        "DATASETS": str(tmp_path / "no-datasets.tar.xz"),
        **extra,
    }


def _carried_wheels() -> set[str]:
    """The distributions scripts/device-wheels.txt carries to the device, normalised."""
    lines = (ROOT / "scripts" / "device-wheels.txt").read_text().splitlines()
    return {ln.split("\t")[0].lower().replace("_", "-") for ln in lines if ln and ln[0] != "#"}


@pytest.mark.slow
def test_the_device_script_builds_its_corpus_from_the_installed_packages(
    tmp_path: Path,
    reserved: Path,  # noqa: F811
) -> None:
    """`pretrain_on_device.sh installed` with packed datasets: no corpus travels; the device's
    own packages become one (the reserved one refused), the model trains within the deadline,
    the corpus's manifest and file hashes come back with it, and the base-model ablation runs
    on the new model from the packed datasets alone. No process imports a package the device
    lacks unless scripts/device-wheels.txt carries it."""
    import importlib.metadata as md

    from repo2lora.tasks.dataset_build import pack_dataset
    from tests.test_dataset_build import _build, _repo

    train_ds, held_ds = tmp_path / "train-ds", tmp_path / "held-ds"
    _build([_repo(tmp_path / "sample").root], train_ds, reserved)
    _build([_repo(tmp_path / n).root for n in ("alpha", "beta")], held_ds, reserved)
    packed = tmp_path / "packed"
    pack_dataset(train_ds, packed / "train", texts=False)
    pack_dataset(held_ds, packed / "held")
    datasets = tmp_path / "datasets.tar.xz"
    with tarfile.open(datasets, "w:xz") as tf:
        tf.add(packed / "train", arcname="train")
        tf.add(packed / "held", arcname="held")
    for n in ("sample", "alpha", "beta"):  # the device has none of the repositories
        (tmp_path / n).rename(tmp_path / f"gone-{n}")
    out = tmp_path / "out"
    out.mkdir()
    env = _installed_env(
        tmp_path, OUT=str(out), DEADLINE_MINUTES="30", DATASETS=str(datasets),
        LORA_STEPS="2", CEILING_REPOS="2", CEILING_STEPS="1",
    )  # fmt: skip
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "pretrain_on_device.sh"), "installed", "0.1",
         *TINY_PRETRAIN],
        capture_output=True, text=True, env=env, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused tqdm==" in proc.stdout and "training for 0.1 minutes" in proc.stdout
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and "model-files.tar" in files and "ablation.json" in files
    assert "result.json" not in files  # ablation.json holds it: the model keeps 7 files
    from repo2lora.pretrain.export import unpack

    model_dir = unpack(out, tmp_path / "model")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    names = {d["name"].lower() for d in manifest["distributions"]}
    assert names == {"pathspec", "pluggy", "smmap"}, names
    assert [r.split("==")[0] for r in manifest["refused_reserved_distributions"]] == ["tqdm"]
    assert manifest["reserved_list"] == env["RESERVED"]
    hashes = (model_dir / "file-sha256.tsv").read_text().splitlines()
    assert len(hashes) == sum(manifest["files"].values()) > 0
    loaded = load_base_model(describe_base_model(str(model_dir)))
    card = json.loads((out / "model_card.json").read_text())
    assert sum(p.numel() for p in loaded.model.parameters()) == card["params"]
    ablation = json.loads((out / "ablation.json").read_text())
    assert set(ablation) == {"pretrain", "bits_per_byte", "shared_lora", "ceiling"}
    assert ablation["pretrain"]["tokens_seen"] == card["tokens_seen"]
    assert ablation["shared_lora"]["steps"] == 2
    bpb = ablation["bits_per_byte"]
    assert bpb["models"][0]["model"] == "default" and bpb["heldout_bytes"] > 0
    variants = ablation["ceiling"]["variants"]
    assert set(variants) == {"base", "shared", "own@1", "other@1"}
    assert all(v["all"]["tasks"] == variants["base"]["all"]["tasks"] > 0 for v in variants.values())
    imported = set((tmp_path / "imports.log").read_text().split())
    assert {"datasketch", "git", "tree_sitter"} <= imported  # what the log shows is real
    dists = md.packages_distributions()
    lacking = imported & LACKING_ON_THE_DEVICE
    uncarried = {
        m for m in lacking if not {d.lower() for d in dists.get(m, [])} & _carried_wheels()
    }
    assert not uncarried, f"imported on the device but neither there nor carried: {uncarried}"


def test_the_device_script_refuses_without_a_reserved_list_or_time(tmp_path: Path) -> None:
    """No reserved list: one line naming the fix, before anything is built. A deadline the
    corpus build leaves no training time in: one line, exit 3, nothing in $OUT."""
    out = tmp_path / "out"
    out.mkdir()
    script = str(ROOT / "scripts" / "pretrain_on_device.sh")
    env = _installed_env(tmp_path, OUT=str(out), RESERVED=str(tmp_path / "missing.tsv"))
    proc = subprocess.run(
        ["bash", script, "installed", "1"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and "prepare_device_pretrain.sh" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    env = _installed_env(tmp_path, OUT=str(out), DEADLINE_MINUTES="0.5")
    proc = subprocess.run(
        ["bash", script, "installed", "1"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 3 and "no time left" in proc.stderr, proc.stderr[-2000:]
    assert list(out.iterdir()) == []


def test_ship_assembles_a_default_from_a_run_and_trained_hypernetworks(tmp_path: Path) -> None:
    """`python -m repo2lora.pretrain.ship --static --evo`: the pretraining run's model, two
    `train`-style checkpoints and a scoring run become a default whose card lists every file
    and records bits per byte and the replaced default's numbers; its hypernetwork manifest
    names the checkpoints' training repositories, the corpus hashes travel for the
    contamination check, and the result loads as a base model with its hypernetworks."""
    from benchmark.contamination import base_model_manifests
    from repo2lora.hypernet.checkpoint import (
        build_hypernet,
        default_hypernet_config,
        load_generator,
        save_hypernet,
    )
    from repo2lora.models import embedded
    from repo2lora.pretrain.ship import main as ship

    run = tmp_path / "run"
    pretrain(run, _small_corpus, CFG)
    (run / "model" / "file-sha256.tsv").write_text("ab" * 32 + "\tstdlib:abc\n")
    info = describe_base_model(str(run / "model"))
    dirs = {}
    for generator, repos in (("code2lora-static", ["a/x", "b/y"]), ("code2lora-evo", ["a/x"])):
        cfg = default_hypernet_config(info)
        net = build_hypernet(type(cfg)(**{**cfg.__dict__, "generator": generator}), info)
        dirs[generator] = tmp_path / generator
        listed = [{"name": r, "url": f"https://github.com/{r}", "commit": "c" * 40} for r in repos]
        save_hypernet(net, info, dirs[generator], training_repositories=listed, train_examples=9)
    row = {"track": "static", "split": "cross-repo", "subset": "all", "method": "base", "n": 3,
           "strict_em": 0.25, "edit_similarity": 0.5, "nll": 2.0}  # fmt: skip
    bench = tmp_path / "bench"
    bench.mkdir()
    report = {"config": {"seed": 0}, "summary": [row], "repos": [
        {"repo": "held/out", "commit": "d" * 40, "split": "test"}]}  # fmt: skip
    (bench / "bench.json").write_text(json.dumps(report))
    evo_bench = tmp_path / "bench-evo"  # a second scoring run (the other track)
    evo_bench.mkdir()
    report["repos"] = [{"repo": "held/two", "commit": "e" * 40, "split": "test"}]
    report["summary"] = [  # the evolving network lost to static@commit after renames
        {**row, "track": "evo", "subset": "after-rename", "method": m, "strict_em": em}
        for m, em in (("code2lora-evo", 0.1), ("code2lora-static@commit", 0.2))
    ]
    (evo_bench / "bench.json").write_text(json.dumps(report))
    (tmp_path / "bpb.json").write_text(json.dumps({"xz_bits_per_byte": 1.4}))
    dest = tmp_path / "default"
    assert ship(["--pretrain", str(run), "--bench", str(bench), "--static",
                 str(dirs["code2lora-static"]), "--evo", str(dirs["code2lora-evo"]), "--dest",
                 str(dest), "--compare-bpb", str(tmp_path / "bpb.json"), "--compare-bench",
                 str(bench), "--also-bench", str(evo_bench)]) == 0  # fmt: skip
    card = embedded.verify(dest)
    assert card["model"]["held_out_bits_per_byte"] > 0 and card["model"]["tokens_seen"] > 0
    assert card["replaces"]["bits_per_byte"]["xz_bits_per_byte"] == 1.4
    assert card["replaces"]["benchmark"]["rows"][0]["strict_em"] == 0.25
    assert card["hypernets"]["code2lora-static"]["repositories"] == 2
    manifest = json.loads((dest / "data" / "hypernet-manifest.json").read_text())
    assert [r["name"] for r in manifest["train"]] == ["a/x", "b/y"]
    assert [r["name"] for r in manifest["benchmark_held_out"]] == ["held/out", "held/two"]
    assert len(card["benchmark"]["more_runs"]) == 1
    follows = card["update_follows"]
    assert (follows["generator"], follows["state"]) == ("code2lora-static", "static")
    assert follows["evidence"]["n"] == 3
    assert any(m.hashes == frozenset({"ab" * 32}) for m in base_model_manifests(dest))
    shipped = describe_base_model(str(dest))
    for generator, rel in embedded.HYPERNETS.items():
        assert load_generator(str(dest / rel), shipped).net.generator_name == generator
    with pytest.raises(SystemExit):
        ship(["--pretrain", str(run), "--bench", str(bench), "--static", str(tmp_path)])


def test_the_evolving_network_follows_history_only_where_it_scored_at_least_static() -> None:
    """The GRU where it scored at least every static-at-every-commit row after renames; else
    the best of those (EM, then NLL); unmeasured, the GRU."""
    from repo2lora.pretrain.ship import history_choice

    def report(**em: float) -> dict[str, object]:
        rows = [
            {
                "track": "evo",
                "split": "cross-repo",
                "subset": "after-rename",
                "method": m,
                "n": 9,
                "strict_em": e,
                "nll": 2.0 + e,
            }
            for m, e in {
                "code2lora-evo": em["evo"],
                "code2lora-evo@commit": em["evo_at"],
                "code2lora-static@commit": em["static_at"],
            }.items()
        ]
        return {"summary": rows}

    def choice(**em: float) -> tuple[str, str]:
        found = history_choice([report(**em)])
        return found["generator"], found["state"]

    assert choice(evo=0.3, evo_at=0.3, static_at=0.2) == ("code2lora-evo", "evo")
    assert choice(evo=0.2, evo_at=0.3, static_at=0.25) == ("code2lora-evo", "static")
    assert choice(evo=0.2, evo_at=0.25, static_at=0.3) == ("code2lora-static", "static")
    unmeasured = history_choice([{"summary": []}])
    assert (unmeasured["generator"], unmeasured["state"], unmeasured["evidence"]) == (
        "code2lora-evo",
        "evo",
        None,
    )
