"""Code2LoRA-Names end to end: the names a snapshot defines (from the chunker's parse), kept
exactly by chunk diffs and stored with the chunks; the names adapter is a standard PEFT LoRA
(the LM head included, tied embeddings untouched) whose logits match in-process application;
snapshot, update and the server use it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from evo_state.diff import commit_chunk_diff
from evo_state.store import SCHEMA_VERSION, open_store
from lsp_server.generation_model import GenerationModel
from repo2lora.adapters.apply import attach_lora, weight_sharing_twin
from repo2lora.adapters.functional import functional_lora
from repo2lora.adapters.peft_dir import load_peft_adapter
from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config, load_hypernet
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.hypernet.names import NamesHypernet
from repo2lora.models import LoadedModel, describe_base_model, load_base_model
from repo2lora.snapshot import snapshot_repository
from repo2lora.training.data import target_end
from repo2lora.update import update_repository
from repo_encoder.chunker import ChunkerConfig, chunk_files, chunk_source
from repo_encoder.exclusion import ExclusionConfig
from repo_encoder.names import NameIndex, module_names
from repo_encoder.snapshot import open_repository, read_snapshot, resolve_commit
from tests.cli import run_json
from tests.gitrepo import GitRepo

INFO = describe_base_model("tiny-random")

SOURCE = textwrap.dedent(
    '''
    """A module."""
    import os

    MAX_SIZE = 3
    _PRIVATE = 4
    A = B_C = 5
    lower = 6
    X: int = 7


    class FooError(ValueError):
        pass


    class Bar(errors.BaseError):
        LIMIT = 3

        def run(self):
            pass

        def _hidden(self):
            pass

        def __init__(self):
            pass

        class Inner:
            def go(self):
                pass


    @decorator
    def public_fn(x):
        return x


    def _private():
        pass
    '''
).encode()


@pytest.fixture(scope="module")
def base() -> Iterator[LoadedModel]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_base_model(INFO)
    torch.set_num_threads(before)


def _definitions(data: bytes, **cfg: int) -> dict[str, tuple[tuple[str, str], ...]]:
    chunks = chunk_source("pkg/mod.py", data, ChunkerConfig(**cfg)).chunks
    return {f"{c.qualname}#{c.part}": c.definitions for c in chunks if c.definitions}


def test_chunks_list_the_public_names_they_define() -> None:
    assert _definitions(SOURCE) == {
        "<module>#0": tuple((n, "constant") for n in ("MAX_SIZE", "A", "B_C", "X")),
        "FooError#0": (("FooError", "exception"),),
        "Bar#0": (("Bar", "exception"),),  # its base's name ends in Error
        "Bar.run#0": (("run", "method"),),
        "Bar.Inner#0": (("Inner", "class"),),
        "Bar.Inner.go#0": (("go", "method"),),
        "public_fn#0": (("public_fn", "function"),),
    }
    # a split chunk: each definition is in the part that holds its line, once
    big = b"".join(b"NAME_%d = %d\n" % (i, i) for i in range(400))
    parts = _definitions(big, max_tokens=100)
    assert len(parts) > 3
    flat = [d for defs in parts.values() for d in defs]
    assert flat == [(f"NAME_{i}", "constant") for i in range(400)]
    # a file that does not parse is cut into windows, which define nothing
    assert _definitions(b"def broken(:\n    pass\nclass Y:\n") == {}


def test_mention_contexts_are_the_code_before_uses_not_definitions() -> None:
    from repo_encoder.names import mention_contexts

    texts = [
        "class Fault(Exception):\n    pass\n",
        "def check(x):\n    if x:\n        raise Fault('no')\n    return Fault\n",
        "Fault\nhandlers = [Fault, Other]\n",
    ]
    got = mention_contexts(texts, ["Fault", "Missing"], per_name=3)
    assert got == {
        "Fault": [
            "def check(x):\n    if x:\n        raise",  # the space before it is the name's
            "def check(x):\n    if x:\n        raise Fault('no')\n    return",
            "Fault\nhandlers = [",  # a text's first word has no context: skipped
        ]
    }
    assert mention_contexts(texts, ["Fault"], per_name=1, chars=6) == {"Fault": [" raise"]}


def test_module_names_come_from_paths() -> None:
    assert module_names("src/pkg/io/json_tools.py") == ["pkg", "io", "json_tools"]
    assert module_names("pkg/__init__.py") == ["pkg"]
    assert module_names("_private/x.py") == ["x"]


def _index_at(repo: GitRepo, rev: str) -> NameIndex:
    r = open_repository(repo.root)
    snap = read_snapshot(r, resolve_commit(r, rev), ExclusionConfig())
    return NameIndex.of(chunk_files(snap.files).chunks)


def test_a_chunk_diff_moves_the_index_exactly_to_the_next_snapshot(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "r")
    repo.commit(
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "LIMIT = 1\n\n\nclass ParseError(Exception):\n    pass\n\n\n"
            "def parse(x):\n    raise ParseError(x)\n",
            "pkg/b.py": "def helper():\n    return 1\n",
        },
        "v1",
    )
    (repo.root / "pkg/b.py").unlink()
    repo.commit(
        {
            # renamed function, changed constant, a new class, b.py deleted, c.py added
            "pkg/a.py": "LIMIT = 2\n\n\nclass ParseError(Exception):\n    pass\n\n\n"
            "def parse_all(x):\n    raise ParseError(x)\n\n\nclass Reader:\n"
            "    def read(self):\n        return parse_all(1)\n",
            "pkg/c.py": "from pkg.a import parse_all\n\n\ndef helper():\n    return parse_all(2)\n",
        },
        "v2",
    )
    r = open_repository(repo.root)
    index = _index_at(repo, "HEAD~1")
    diff = commit_chunk_diff(
        r, r.commit("HEAD~1").hexsha, r.commit("HEAD").hexsha, ExclusionConfig(), ChunkerConfig()
    )
    index.apply(diff.brought_in, diff.taken_out)
    fresh = _index_at(repo, "HEAD")
    assert index == fresh
    names = {(n.name, n.kind) for n in fresh.names()}
    assert {("parse_all", "function"), ("Reader", "class"), ("read", "method")} <= names
    assert {("ParseError", "exception"), ("LIMIT", "constant"), ("c", "module")} <= names
    assert ("parse", "function") not in names and ("b", "module") not in names
    by_name = {n.name: n for n in fresh.names()}
    # its definition, Reader.read, and in c.py the import and helper
    assert by_name["parse_all"].mentions == 4
    assert NameIndex.from_bytes(fresh.to_bytes()) == fresh


def test_a_version_1_store_is_migrated_and_keeps_names(tmp_path: Path) -> None:
    state = tmp_path / ".repo2lora"
    state.mkdir()
    db = sqlite3.connect(state / "state.db")
    db.execute("create table meta (key text primary key, value text)")
    db.execute("insert into meta values ('schema_version', '1')")
    db.execute(
        "create table chunks (commit_sha text, path text, qualname text, kind text, "
        "start_line integer, end_line integer, part integer, hash text, "
        "primary key (commit_sha, path, start_line, part))"
    )
    db.execute("insert into chunks values ('c0', 'a.py', 'f', 'function', 1, 2, 0, 'h')")
    db.commit()
    db.close()
    chunks = chunk_source("pkg/mod.py", SOURCE).chunks
    index = NameIndex.of(chunks)
    with open_store(tmp_path) as store:
        version = store.db.execute("select value from meta where key = 'schema_version'")
        assert int(version.fetchone()[0]) == SCHEMA_VERSION == 2
        store.record_state(
            commit="c1",
            parents=[],
            authored_at=0,
            summary="s",
            chunks=chunks,
            hypernet_key="k",
            kind="evo",
            model_key="m",
            vector=torch.zeros(4).numpy(),
            stats={},
            adapter_path=None,
            names=index.to_bytes(),
        )
    with open_store(tmp_path) as store:
        stored = store.get_names("c1")
        assert stored is not None and NameIndex.from_bytes(stored) == index
        assert store.get_names("c0") is None
        defs = [d for path, ds in store.chunk_definitions("c1") for d in ds]
        assert ["FooError", "exception"] in defs and ["public_fn", "function"] in defs


def _trained_like(net: NamesHypernet) -> None:
    """Parameters moved off their neutral start, as training would."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        net.names.gain.fill_(0.3)


def _names(repo_root: Path) -> NameIndex:
    files = [(str(p.relative_to(repo_root)), p.read_bytes()) for p in repo_root.rglob("*.py")]
    return NameIndex.of(chunk_files(files).chunks)


@pytest.mark.parametrize("contexts", [0, 4])
def test_names_adapter_is_a_standard_peft_lora_with_matching_logits(
    base: LoadedModel, tmp_path: Path, contexts: int
) -> None:
    cfg = dataclasses.replace(
        default_hypernet_config(INFO), generator="code2lora-names", names_contexts=contexts
    )
    net = build_hypernet(cfg, INFO)
    assert isinstance(net, NamesHypernet) and net.reads_uses == (contexts > 0)
    probe = NameProbe(base.model, base.tokenizer, cfg.names_tokens)
    root = Path(__file__).parent.parent / "repo_encoder"
    files = [(str(p.relative_to(root)), p.read_bytes()) for p in sorted(root.rglob("*.py"))]
    chunks = chunk_files(files).chunks
    names = NameInput(NameIndex.of(chunks).names(), probe, [c.text for c in chunks])
    state = torch.randn(cfg.state_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        neutral = net.generate(state, names).detached()
    assert neutral.tensors["lm_head"][0].abs().sum() == 0  # untrained: the head is left alone
    _trained_like(net)
    with torch.no_grad():
        weights = net.generate(state, names).detached()
        blind = net.generate(state, dataclasses.replace(names, texts=())).detached()
    # the uses of its names move the first tokens' keys (and only with contexts)
    moved = (weights.tensors["lm_head"][0] - blind.tensors["lm_head"][0]).abs().max()
    assert (moved > 1e-4) == (contexts > 0)
    a, b = weights.tensors["lm_head"]
    assert a.shape == (cfg.names_rank, 64) and b.shape == (INFO.config.vocab_size, cfg.names_rank)
    assert weights.rank_pattern == {"lm_head": cfg.names_rank}
    from repo2lora.snapshot import save_adapter

    save_adapter(weights, tmp_path / "adapter", INFO, {"generator": net.generator_name})
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "lm_head" in saved["target_modules"] and saved["rank_pattern"] == {"lm_head": 64}
    assert load_peft_adapter(tmp_path / "adapter").scalings() == weights.scalings()

    ids = base.tokenizer("def f(x):\n    raise Chunk", return_tensors="pt")["input_ids"]
    embeddings = base.model.get_input_embeddings().weight.detach().clone()
    with torch.no_grad():
        plain = base.model(ids).logits
        peft = PeftModel.from_pretrained(weight_sharing_twin(base.model), tmp_path / "adapter")
        loaded = peft(ids).logits
        attached = attach_lora(weight_sharing_twin(base.model), weights)(ids).logits
        batched, targets = net.batched_lora(state[None], [names])
        with functional_lora(base.model, targets, batched, net.scaling):
            functional = base.model(ids).logits
        merged = GenerationModel(base, weights, "merged")
        merged.install(weights, commit="c")
        installed = merged.model(ids).logits
    assert (loaded - plain).abs().max() > 1e-2  # the head's pair changes the logits
    torch.testing.assert_close(loaded, attached, rtol=0, atol=1e-5)
    torch.testing.assert_close(loaded, functional, rtol=0, atol=1e-4)
    torch.testing.assert_close(loaded, installed, rtol=0, atol=1e-4)
    # the LM head is tied to the embeddings: nothing above wrote them
    assert torch.equal(base.model.get_input_embeddings().weight, embeddings)
    torch.testing.assert_close(base.model(ids).logits, plain, rtol=0, atol=0)


def test_update_reads_the_chunk_texts_the_snapshot_chunked(
    sample_repo: GitRepo, tmp_path: Path
) -> None:
    """A memory that reads how the code uses its names gets the same texts from `update` (read
    afresh, each file chunked once per content) as from `snapshot` (its chunks), so both make
    the same adapter at one commit; the work tree's edits reach it."""
    from repo2lora.hypernet.checkpoint import save_hypernet
    from repo2lora.snapshot import CodeTexts, moved_texts, open_context

    cfg = dataclasses.replace(
        default_hypernet_config(INFO), generator="code2lora-names", names_contexts=4
    )
    net = build_hypernet(cfg, INFO)
    assert isinstance(net, NamesHypernet)
    _trained_like(net)
    ckpt = save_hypernet(net, INFO, tmp_path / "ckpt")
    root = sample_repo.root
    # a walk remembers its texts: the snapshot's chunks, then each commit's moved by its diff,
    # so following a commit chunks no file afresh (what the server keeps across updates)
    code = CodeTexts()
    for rev in ("HEAD~1", "HEAD"):
        head = update_repository(
            root, rev, model="tiny-random", hypernet=str(ckpt), code_texts=code
        )
    assert [s.source for s in head.steps] == ["diff"] and code.files_chunked == 0
    snap = snapshot_repository(root, "HEAD", model="tiny-random", hypernet=str(ckpt))
    ctx = open_context(root, model="tiny-random", hypernet=str(ckpt))
    commit = resolve_commit(ctx.repo, "HEAD")
    files = read_snapshot(ctx.repo, commit, ExclusionConfig()).files
    assert ctx.texts_at(commit) == [c.text for c in chunk_files(files).chunks]
    assert ctx.texts_at(commit) == ctx.texts_at(commit)  # the second read chunks nothing
    assert sorted(code.of(commit.hexsha) or []) == sorted(ctx.texts_at(commit))
    # a commit's texts moved by its chunk diff are a fresh read's (O(diff) on a walk)
    parent = resolve_commit(ctx.repo, "HEAD~1")
    diff = commit_chunk_diff(
        ctx.repo, parent.hexsha, commit.hexsha, ExclusionConfig(), ChunkerConfig()
    )
    assert diff.brought_in or diff.taken_out
    moved = moved_texts(ctx.texts_at(parent), diff)
    assert sorted(moved) == sorted(ctx.texts_at(commit)) and moved != ctx.texts_at(parent)
    shutil.rmtree(snap.adapter_path)  # its adapter gone: update writes it again from texts_at
    res = update_repository(root, "HEAD", model="tiny-random", hypernet=str(ckpt))
    assert snap.weights is not None
    torch.testing.assert_close(
        load_peft_adapter(res.adapter_path).tensors["lm_head"][0],
        snap.weights.tensors["lm_head"][0],
    )
    sample_repo.write({"pkg/extra.py": "def use():\n    raise Gadget('x')\n"})
    wt = update_repository(root, "HEAD", model="tiny-random", hypernet=str(ckpt), worktree=True)
    assert wt.worktree is not None and wt.worktree.added == 1


def test_snapshot_and_update_carry_names_in_o_diff(sample_repo: GitRepo, tmp_path: Path) -> None:
    cfg = dataclasses.replace(default_hypernet_config(INFO), generator="code2lora-names")
    net = build_hypernet(cfg, INFO)
    assert isinstance(net, NamesHypernet)
    _trained_like(net)
    from repo2lora.hypernet.checkpoint import save_hypernet

    ckpt = save_hypernet(net, INFO, tmp_path / "ckpt")
    root = sample_repo.root
    snap = snapshot_repository(root, "HEAD~1", model="tiny-random", hypernet=str(ckpt))
    assert snap.weights is not None and "lm_head" in snap.weights.tensors
    first = update_repository(root, "HEAD~1", model="tiny-random", hypernet=str(ckpt))
    assert first.resumed_from == snap.commit  # the snapshot's state and names, adopted
    res = update_repository(root, "HEAD", model="tiny-random", hypernet=str(ckpt))
    assert res.resumed_from == first.target and [s.source for s in res.steps] == ["diff"]
    head = open_repository(root).head.commit.hexsha
    with open_store(root) as store:
        stored = store.get_names(head)
    assert stored is not None
    assert NameIndex.from_bytes(stored) == _index_at(sample_repo, "HEAD")
    assert load_peft_adapter(res.adapter_path).tensors["lm_head"][0].abs().sum() > 0
    # uncommitted edits are folded in transiently: their names reach the adapter only
    sample_repo.write({"pkg/extra.py": "class Gadget:\n    pass\n"})
    wt = update_repository(root, "HEAD", model="tiny-random", hypernet=str(ckpt), worktree=True)
    assert wt.worktree is not None and wt.worktree.added == 1
    assert not torch.equal(
        load_peft_adapter(wt.adapter_path).tensors["lm_head"][0],
        load_peft_adapter(res.adapter_path).tensors["lm_head"][0],
    )
    with open_store(root) as store:
        assert NameIndex.from_bytes(store.get_names(head) or b"") == _index_at(sample_repo, "HEAD")
    # the server's neutral template has the same shapes as an update's adapter
    loaded = load_hypernet(str(ckpt), INFO)
    template = loaded.net.generate(torch.zeros(cfg.state_dim)).detached()
    assert {p: a.shape for p, (a, _) in template.tensors.items()} == {
        p: a.shape for p, (a, _) in load_peft_adapter(res.adapter_path).tensors.items()
    }


def test_snapshot_cli_with_the_untrained_names_generator(sample_repo: GitRepo) -> None:
    out = run_json(
        "snapshot", str(sample_repo.root), "--model", "tiny-random", "--generator",
        "code2lora-names",
    )  # fmt: skip
    assert out["hypernet_untrained"] is True
    provenance = json.loads((Path(out["adapter_path"]) / "repo2lora.json").read_text())
    assert provenance["generator"] == "code2lora-names"


def test_target_end_reads_the_slot_the_prefix_leaves_open() -> None:
    assert target_end("    with pytest.raises(") == ")"
    assert target_end("    self.assertEqual(self.x.add(3), ") == ")"
    assert target_end("    assert f(1) == ") == "\n"
    assert target_end('    assert g([1, 2], "(") == ') == "\n"
    assert target_end("    assert d == [1, ") == "]"


def test_the_server_follows_a_repository_with_a_names_generator(
    sample_repo: GitRepo, tmp_path: Path
) -> None:
    from lsp_server.config import ServerConfig
    from lsp_server.events import QuietEvents
    from lsp_server.prompt import Prompt
    from lsp_server.session import Session, resolve_models

    cfg = dataclasses.replace(default_hypernet_config(INFO), generator="code2lora-names")
    net = build_hypernet(cfg, INFO)
    _trained_like(net)
    from repo2lora.hypernet.checkpoint import save_hypernet

    ckpt = save_hypernet(net, INFO, tmp_path / "ckpt")
    config = ServerConfig(model="tiny-random", watch=False, max_new_tokens=4)
    session = Session(
        [sample_repo.root], config, resolve_models("tiny-random", str(ckpt)), QuietEvents()
    )
    session.start()
    try:
        session.ready.result(timeout=60)
        session.regenerate().result(timeout=120)
        status = session.status()
        assert status["adapter"]["commit"] == open_repository(sample_repo.root).head.commit.hexsha
        assert session.name_probe is not None and session.name_probe._states  # kept warm
        res = session.complete(Prompt("x = Vec", ""), lambda: False)
        assert res.version == status["adapter"]["version"] >= 1
    finally:
        session.close()


def test_the_names_speed_benchmark_prints_its_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark.speed import names as speed

    speed.main(["--lines", "800", "--model", "tiny-random", "--repeats", "1", "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "names" and report["names"] > 0
    assert {"adapter_cold_probe", "per_adapter_server_update"} <= set(report["ms"])
    assert set(report["meets_target"]) == {"cli", "server"}


def test_a_commit_that_renames_a_definition_is_detected_from_its_names(tmp_path: Path) -> None:
    """Real histories have no manifest of renames: a definition replaced in place by another of
    its kind is one (`renamed_definitions`), a new definition beside the old ones is not, and
    the benchmark's walk marks the steps where one happened (`detected_renames`)."""
    from benchmark.prepare import detected_renames
    from repo_encoder.names import renamed_definitions

    repo = GitRepo(tmp_path / "r")
    src = "def area(r):\n    return 3 * r * r\n\n\nclass Shape:\n    pass\n"
    repo.commit({"pkg/geo.py": src}, "v1")
    repo.commit({"pkg/geo.py": src + "\n\ndef perimeter(r):\n    return 6 * r\n"}, "added")
    repo.commit({"pkg/geo.py": src.replace("area", "area_of_circle") + "\n\ndef perimeter(r):\n"
                 "    return 6 * r\n"}, "renamed")  # fmt: skip
    steps = [_index_at(repo, f"HEAD~{k}") for k in (2, 1, 0)]
    assert renamed_definitions(steps[0], steps[1]) == set()  # an addition is not a rename
    assert renamed_definitions(steps[1], steps[2]) == {"area_of_circle"}
    assert detected_renames(steps) == {2: {"area_of_circle"}}
