"""The pretraining corpus: reserved distributions never reach it (vendored copies included),
files are checked and deduplicated, the split is by distribution, an interrupted build
finishes, and bad input is one clear error."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from repo2lora.pretrain.corpus import (
    CorpusConfig,
    CorpusError,
    build_corpus,
    iter_docs,
    read_manifest,
    split_of,
    subset_corpus,
)
from repo2lora.pretrain.sources import Distribution, PackageListError, read_package_list
from repo2lora.reserved import DEFAULT_RESERVED_PATH, load_reserved, parse_reserved
from tests.cli import run_cli

RESERVED_TSV = (
    "# comment\ndistribution\timport_names\tgithub\n"
    "six\tsix\tbenjaminp/six\npackaging\tpackaging\tpypa/packaging\n"
    "toolz\ttoolz,tlz\tpytoolz/toolz\n"
)


def _module(i: int, salt: str) -> str:
    body = "\n".join(
        f"def {salt}_function_{i}_{k}(value_{k}, other_{k}=None):\n"
        f"    result = value_{k} * {k + i} + len(str(other_{k}))\n"
        f"    return result - {k}\n"
        for k in range(12)
    )
    return f'"""Module {i} of {salt}."""\n\nimport os\n\n{body}'


def _wheel(cache: Path, name: str, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(cache / f"{name}-1.0-py3-none-any.whl", "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{name}-1.0.dist-info/METADATA", f"Name: {name}\nLicense: MIT\n")


def _inputs(tmp_path: Path) -> tuple[CorpusConfig, list[str]]:
    """A pinned list of local wheels (no download: they are in the cache) with a reserved
    distribution among them and reserved code vendored inside another."""
    cache = tmp_path / "cache"
    cache.mkdir()
    reserved = tmp_path / "reserved.tsv"
    reserved.write_text(RESERVED_TSV)
    cfg0 = CorpusConfig(heldout_share=0.5, seed=3)
    names = [f"demo{i}" for i in range(12)]
    splits = {n: split_of(Distribution(n, "1.0", "pypi"), cfg0) for n in names}
    assert {"train", "heldout"} <= set(splits.values())
    first = names[0]
    _wheel(
        cache,
        first,
        {
            f"{first}/__init__.py": _module(0, first).encode(),
            f"{first}/core.py": _module(1, first).encode(),
            f"{first}/copy_of_core.py": _module(1, first).encode(),  # exact duplicate
            f"{first}/near_core.py": _module(1, first).replace("import os", "import sys").encode(),
            f"{first}/_vendor/packaging/version.py": _module(2, "vendored").encode(),
            f"{first}/_vendor/six.py": _module(3, "vendored").encode(),
            f"{first}/latin1.py": "x = 'caf\xe9'\n".encode("latin-1"),
            f"{first}/broken.py": b"def broken(:\n    pass\n",
            f"{first}/empty.py": b"   \n",
        },
    )
    for n in names[1:]:
        _wheel(cache, n, {f"{n}/__init__.py": _module(5, n).encode()})
    # the reserved distribution itself, as if it had been downloaded
    _wheel(cache, "six", {"six.py": _module(9, "six").encode()})
    plist = tmp_path / "packages.txt"
    plist.write_text("# pinned\n" + "".join(f"{n}==1.0\n" for n in [*names, "six"]))
    cfg = CorpusConfig(
        package_list=str(plist),
        reserved=str(reserved),
        stdlib=False,
        installed=False,
        heldout_share=0.5,
        seed=3,
        cache=str(cache),
    )
    return cfg, names


def test_reserved_code_never_reaches_the_corpus_and_files_are_checked(tmp_path: Path) -> None:
    cfg, names = _inputs(tmp_path)
    res = build_corpus(tmp_path / "corpus", cfg)
    docs = [*iter_docs(tmp_path / "corpus", "train"), *iter_docs(tmp_path / "corpus", "heldout")]
    texts = "\n".join(d.text for d in docs)
    assert "vendored_function" not in texts and "six_function" not in texts
    assert not any("_vendor" in d.path or d.package == "six" for d in docs)
    assert res.refused_reserved == ["six==1.0"]
    assert res.reserved_files_dropped == {"packaging": 1, "six": 1}
    assert res.dropped["exact_duplicate"] == 1 and res.dropped["near_duplicate"] == 1
    assert res.dropped["not_utf8"] == 1 and res.dropped["does_not_parse"] == 1
    assert res.dropped["empty"] == 1
    manifest = read_manifest(tmp_path / "corpus")
    by_name = {d["name"]: d for d in manifest["distributions"]}
    assert set(by_name) == set(names)
    assert by_name[names[0]]["files"] == 2 and by_name[names[0]]["license"] == "MIT"
    train = {d.package for d in iter_docs(tmp_path / "corpus", "train")}
    held = {d.package for d in iter_docs(tmp_path / "corpus", "heldout")}
    assert train and held and not train & held
    assert {by_name[n]["split"] for n in held} == {"heldout"}
    hashes = (tmp_path / "corpus" / "file-sha256.tsv").read_text().splitlines()
    assert len(hashes) == len(docs) == res.files["train"] + res.files["heldout"]


def test_an_interrupted_build_is_reported_and_finishes(tmp_path: Path) -> None:
    cfg, _ = _inputs(tmp_path)
    out = tmp_path / "corpus"
    calls = []

    def die(stage: str, done: int, total: int) -> None:
        calls.append(stage)
        if stage == "extract" and done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_corpus(out, cfg, die)
    assert not out.exists()
    with pytest.raises(CorpusError, match="unfinished"):
        read_manifest(out)
    # resumed with another split: refused, the partial build kept for the right options
    with pytest.raises(CorpusError, match=r"other options \(heldout_share\)"):
        build_corpus(out, replace(cfg, heldout_share=0.2))
    res = build_corpus(out, cfg)
    assert res.files["train"] + res.files["heldout"] == 13
    with pytest.raises(CorpusError, match="already holds a finished corpus"):
        build_corpus(out, cfg)
    sub = subset_corpus(out, tmp_path / "sub", train_bytes=1, heldout_bytes=10**9)
    assert sub["bytes"]["train"] > 0 and len(list(iter_docs(tmp_path / "sub", "train"))) == 1


def test_the_shared_reserved_list_is_read_at_run_time(tmp_path: Path) -> None:
    """A list written now is what is read (nothing is built in), and the default path is the
    shared list beside the checkout, which CI always has."""
    made_up = tmp_path / "reserved.tsv"
    made_up.write_text("distribution\timport_names\tgithub\nzzfrob\tzzfrob\tnobody/zzfrob\n")
    assert load_reserved(made_up).distribution_reserved("zzfrob")
    assert not load_reserved(made_up).distribution_reserved("click")
    assert DEFAULT_RESERVED_PATH.is_file(), (
        "../shared/eval-reserved.tsv must sit beside the checkout"
    )
    rl = load_reserved()
    first = next(
        ln.split("\t")
        for ln in DEFAULT_RESERVED_PATH.read_text().splitlines()
        if ln and not ln.startswith(("#", "distribution"))
    )
    assert rl.distribution_reserved(first[0])
    imp = first[1].split(",")[0]
    assert rl.path_reservation(f"pip/_vendor/{imp}/x.py") is not None
    assert rl.repository_reserved(f"https://github.com/{first[2]}.git")


def test_reserved_matching_rules() -> None:
    rl = parse_reserved(RESERVED_TSV)
    assert rl.distribution_reserved("Six") and not rl.distribution_reserved("sixer")
    assert rl.path_reservation("pip/_vendor/packaging/version.py") == "packaging"
    assert rl.path_reservation("six.py") == "six"
    assert rl.path_reservation("urllib3/packages/six.py") == "six"
    assert rl.path_reservation("mylib/six_helpers.py") is None
    assert rl.path_reservation("mylib/models/six.py") is None  # not vendored, not top level
    assert rl.path_reservation("tlz/__init__.py") == "toolz"
    assert rl.repository_reserved("pytoolz/toolz") and not rl.repository_reserved("me/toolz2")


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "packages.txt"
    bad.write_text("django\n")
    with pytest.raises(PackageListError, match="not pinned"):
        read_package_list(bad)
    proc = run_cli("corpus", "build", "--out", str(tmp_path / "c"), "--packages", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("repo2lora: error:") and "name==version" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    proc = run_cli("pretrain", "--corpus", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"),
                   "--tokens", "1000")  # fmt: skip
    assert proc.returncode == 1 and "is not a corpus" in proc.stderr
    (tmp_path / "half.partial").mkdir()
    proc = run_cli("pretrain", "--corpus", str(tmp_path / "half"), "--out", str(tmp_path / "r"),
                   "--tokens", "1000")  # fmt: skip
    assert proc.returncode == 1 and "corpus build --out" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_the_build_does_not_depend_on_its_worker_count(tmp_path: Path) -> None:
    """Installed distributions checked and signed in 1 or 2 processes give the same corpus,
    shard by shard; an interrupted 2-process build finishes to it too. A name that is not
    installed is a one-line error that leaves nothing behind."""
    reserved = tmp_path / "reserved.tsv"
    reserved.write_text(RESERVED_TSV)
    cfg = CorpusConfig(
        package_list=None,
        reserved=str(reserved),
        stdlib=False,
        installed_only=("pathspec", "pluggy", "smmap", "gitdb"),
        heldout_share=0.5,
    )
    one = build_corpus(tmp_path / "one", cfg, workers=1)
    calls = 0

    def die(stage: str, done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if stage == "extract" and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_corpus(tmp_path / "two", cfg, die, workers=2)
    two = build_corpus(tmp_path / "two", cfg, workers=2)
    assert one.files == two.files and one.dropped == two.dropped and one.distributions == 4
    shards = [
        json.loads((tmp_path / d / "corpus.json").read_text())["shards"] for d in ("one", "two")
    ]
    assert shards[0] == shards[1]
    assert (tmp_path / "one" / "file-sha256.tsv").read_bytes() == (
        tmp_path / "two" / "file-sha256.tsv"
    ).read_bytes()
    args = ["--no-pypi", "--no-stdlib", "--reserved", str(reserved)]
    proc = run_cli(
        "corpus", "build", "--out", str(tmp_path / "c"), *args, "--installed-only", "pluggy,no-x"
    )
    assert proc.returncode == 1 and "not installed here: no-x" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("c*"))
