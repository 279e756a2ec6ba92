"""`repo2lora dataset build` on real git repositories made in a temporary directory: the three
kinds of tasks with the right counts, the encodings read back, a bare git directory read
through a clone, resume after an interruption, a reserved repository refused, `--json`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from repo2lora.models.loading import describe_base_model, load_base_model
from repo2lora.tasks.dataset_build import build_dataset, load_built_repo
from repo2lora.tasks.line_tasks import mine_file_lines
from repo_encoder.chunk import DefinitionKind
from repo_encoder.errors import UserError
from tests.cli import run_cli
from tests.gitrepo import SAMPLE_V1, SAMPLE_V2, GitRepo

INFO = describe_base_model("tiny-random")
USE = (
    "from pkg.geometry import UNIT, area_of_circle\n"
    "\n"
    'NOTE = "Vector is named in a string only"\n'
    "# Vector in a comment does not count either\n"
    "\n"
    "\n"
    "def scaled_area(r):\n"
    "    return area_of_circle(r) * UNIT\n"
)
TESTS_V3 = (
    "from pkg.geometry import area_of_circle\n"
    "from pkg.use import scaled_area\n\n\n"
    "def test_area():\n    assert area_of_circle(1) == 3.141592653589793\n\n\n"
    "def test_scaled():\n    assert scaled_area(0) == 0.0\n"
    "    assert scaled_area(1) == 3.141592653589793\n"
)


def _repo(root: Path) -> GitRepo:
    """Three commits: v1 (a package, one assertion), v2 (a module importing another), v3 (a
    module using two names of another file, two more assertions)."""
    repo = GitRepo(root)
    repo.commit(SAMPLE_V1, "v1")
    repo.commit(SAMPLE_V2, "v2")
    repo.commit({"pkg/use.py": USE, "tests/test_geometry.py": TESTS_V3}, "v3")
    return repo


@pytest.fixture
def reserved(tmp_path: Path) -> Path:
    path = tmp_path / "reserved.tsv"
    path.write_text("distribution\timport_names\tgithub\ntoolz\ttoolz,tlz\tpytoolz/toolz\n")
    return path


def _build(paths: list[Path], out: Path, reserved: Path) -> dict:
    res = build_dataset(
        paths, out, INFO.model_key, lambda: load_base_model(INFO), pool_files=[], reserved=reserved
    )
    return res.__dict__


def test_a_repository_gives_static_evolution_and_line_tasks(tmp_path: Path, reserved: Path):
    repo = _repo(tmp_path / "sample")
    res = _build([repo.root], tmp_path / "ds", reserved)
    assert res["built"] == ["sample"] and not res["skipped"]
    # HEAD: 3 assertions; the walk (v2, v3) adds 2 (v3); line tasks: shapes.py's import of
    # Vector, use.py's import and its use of area_of_circle and UNIT (not the string, comment)
    assert res["counts"] == {"static": 3, "evo": 2, "line": 3}
    built = load_built_repo(tmp_path / "ds" / "repos" / "sample")
    lines = [(t["path"], t["line"], t["target"]) for t in built.tasks if t["kind"] == "line"]
    assert lines == [
        ("pkg/shapes.py", 1, "from pkg.geometry import Vector"),
        ("pkg/use.py", 1, "from pkg.geometry import UNIT, area_of_circle"),
        ("pkg/use.py", 8, "return area_of_circle(r) * UNIT"),
    ]
    use = next(t for t in built.tasks if t["kind"] == "line" and t["line"] == 8)
    assert use["prefix"].endswith("def scaled_area(r):\n    ") and use["names"] == [
        "area_of_circle",
        "UNIT",
    ]
    assert {t["step"] for t in built.tasks if t["kind"] == "evo"} == {2}
    # the encodings: the snapshot's rows, one diff per walked commit, a held-out file's rows gone
    assert built.walk is not None and len(built.walk.diffs) == 2
    assert built.snapshot.vectors.shape[0] == len(built.chunk_paths) > 0
    n_use = built.chunk_paths.count("pkg/use.py")
    assert n_use > 0
    held = built.without("pkg/use.py").vectors
    assert held.shape[0] == built.snapshot.vectors.shape[0] - n_use
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    (entry,) = manifest["training_repositories"]
    assert entry["name"] == "sample" and entry["commit"] == repo.git("rev-parse", "HEAD")
    assert entry["counts"] == res["counts"] and len(entry["file_sha256"]) == 5


def test_a_bare_mirror_is_read_through_a_clone_and_named_from_its_path(
    tmp_path: Path, reserved: Path
):
    repo = _repo(tmp_path / "work")
    bare = tmp_path / "mirror" / "acme+geometry" / "repo"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.root), str(bare)], check=True)
    before = sorted(p.name for p in bare.iterdir())
    res = _build([bare], tmp_path / "ds", reserved)
    assert res["counts"] == {"static": 3, "evo": 2, "line": 3}
    (entry,) = res["repositories"]
    assert entry["name"] == "acme/geometry" and entry["url"] == "https://github.com/acme/geometry"
    assert sorted(p.name for p in bare.iterdir()) == before  # nothing written into the mirror
    assert (tmp_path / "ds" / "repos" / "acme+geometry" / "summary.json").is_file()


def test_an_interrupted_build_resumes_from_the_cache(tmp_path: Path, reserved: Path):
    a, b = _repo(tmp_path / "a"), _repo(tmp_path / "b")
    out = tmp_path / "ds"
    first = _build([a.root], out, reserved)
    assert first["built"] == ["a"]
    # an interruption during b: its directory was being written aside, never renamed in
    (out / "repos" / ".b.partial").mkdir(parents=True)
    second = _build([a.root, b.root], out, reserved)
    assert second["cached"] == ["a"] and second["built"] == ["b"]
    third = _build([a.root, b.root], out, reserved)
    assert third["cached"] == ["a", "b"] and not third["built"]
    assert third["counts"] == {"static": 6, "evo": 4, "line": 6}
    # a run over one of them keeps the other in the manifest (a dataset grows)
    _build([b.root], out, reserved)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["name"] for e in manifest["training_repositories"]] == ["a", "b"]
    # a repository whose directory is lost is built again from cached vectors: nothing encoded
    summary = out / "repos" / "b" / "summary.json"
    summary.unlink()
    fourth = _build([a.root, b.root], out, reserved)
    assert fourth["built"] == ["b"] and json.loads(summary.read_text())["encoded"] == 0
    # a repository built before datasets kept names gets them on the next run, still cached
    names = out / "repos" / "a" / "names.json"
    kept = names.read_text()
    names.unlink()
    fifth = _build([a.root, b.root], out, reserved)
    assert fifth["cached"] == ["a", "b"] and names.read_text() == kept


def test_a_reserved_repository_is_refused_before_anything_is_written(
    tmp_path: Path, reserved: Path
):
    ok = _repo(tmp_path / "fine")
    bad = _repo(tmp_path / "toolz")
    with pytest.raises(UserError, match=r"toolz .* is reserved for evaluation"):
        _build([ok.root, bad.root], tmp_path / "ds", reserved)
    assert not (tmp_path / "ds").exists()


def test_the_cli_prints_json_and_refuses_in_one_line(tmp_path: Path, reserved: Path):
    repo = _repo(tmp_path / "sample")
    out = tmp_path / "ds"
    common = ["--model", "tiny-random", "--reserved", str(reserved), "--pool"]
    proc = run_cli(
        "dataset", "build", "--repos", str(repo.root), "--out", str(out), "--json", *common
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"static": 3, "evo": 2, "line": 3} and doc["built"] == ["sample"]
    # stderr is a pipe here, as a log is: progress comes as lines (with --json too, which keeps
    # stdout to itself), one stage, the repositories, from its start to its end
    assert proc.stderr.splitlines()[0] == "repositories: 0/1  elapsed 0:00:00"
    assert proc.stderr.splitlines()[-1].startswith("repositories: 1/1  elapsed ")
    assert proc.stderr.splitlines()[-1].endswith("done")
    assert not [line for line in proc.stderr.splitlines() if not line.startswith("repositories:")]
    bad = _repo(tmp_path / "toolz")
    proc = run_cli("dataset", "build", "--repos", str(bad.root), "--out", str(out), *common)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("repo2lora: error: toolz")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_line_tasks_skip_names_the_file_binds_itself() -> None:
    src = (
        "class Vector:\n    pass\n\n\n"
        "v = Vector()\n"
        "w = area_of_circle(2)\n"
        "spec = build(spec=1)\n"  # a local named like a module, a keyword argument
        "def f(config):\n    return config.spec + util.helper()\n"
    )
    names: dict[str, DefinitionKind] = {
        "area_of_circle": "function",
        "Vector": "class",
        "spec": "module",
        "config": "module",
        "util": "module",
        "helper": "function",
    }
    tasks = mine_file_lines("r", "c", "m.py", src, names)
    assert [(t.line, t.target, t.names) for t in tasks] == [
        (6, "w = area_of_circle(2)", ("area_of_circle",)),
        (9, "return config.spec + util.helper()", ("util", "helper")),
    ]


def test_train_reads_a_built_dataset(tmp_path: Path, reserved: Path):
    """`train --dataset`: static and line tasks (a line task's encoder input without its file)
    or the walk, the card naming the dataset's repositories; the snapshot's names for a
    generator that reads them (a line task's without its file's); the wrong base model, a
    generator that reads text, and --repos beside it are one-line errors."""
    from repo2lora.tasks.training_data import training_data_from_dataset

    repo = _repo(tmp_path / "sample")
    ds = tmp_path / "ds"
    _build([repo.root], ds, reserved)
    static = training_data_from_dataset(ds, INFO.model_key, evolving=False)
    examples = static.train + static.test
    assert sorted(e.target for e in examples if e.repo != "sample") == [
        "from pkg.geometry import UNIT, area_of_circle",
        "from pkg.geometry import Vector",
        "return area_of_circle(r) * UNIT",
    ]
    assert sum(e.repo == "sample" for e in examples) == 3
    full = static.encodings["sample"].vectors.shape[0]
    assert static.encodings["sample-pkg/use.py"].vectors.shape[0] < full
    assert all(not e.names for e in static.encodings.values())
    named = training_data_from_dataset(ds, INFO.model_key, evolving=False, names=True)

    def defined(key: str) -> set[str]:
        return {n.name for n in named.encodings[key].names[0].names() if n.kind != "module"}

    assert {"area_of_circle", "UNIT", "scaled_area"} <= defined("sample")
    assert "scaled_area" not in defined("sample-pkg/use.py")
    assert "area_of_circle" in defined("sample-pkg/use.py")
    # the chunk texts a names memory reads uses in: the snapshot's, a line task's without its file
    texts = named.encodings["sample"].texts
    assert any("def scaled_area" in t for t in texts)
    assert not any("def scaled_area" in t for t in named.encodings["sample-pkg/use.py"].texts)
    assert len(named.encodings["sample-pkg/use.py"].texts) < len(texts)
    evo = training_data_from_dataset(ds, INFO.model_key, evolving=True)
    assert sorted(e.step for e in evo.train + evo.test) == [2, 2]
    assert len(evo.encodings["sample"].diffs) == 2
    with pytest.raises(UserError, match="was encoded by base model"):
        training_data_from_dataset(ds, "another-model", evolving=False)
    # a reader of tasks only (the shared LoRA) takes any base model's dataset
    tasks_only = training_data_from_dataset(ds, "another-model", evolving=False, vectors=False)
    assert sorted(e.task_id for e in tasks_only.train) == sorted(e.task_id for e in static.train)

    out = tmp_path / "net"
    common = ["--model", "tiny-random", "--steps", "2", "--eval-every", "0"]
    proc = run_cli("train", "--dataset", str(ds), "--out", str(out), "--json", *common)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((Path(json.loads(proc.stdout)["out_dir"]) / "hypernet.json").read_text())
    assert [r["name"] for r in card["training_repositories"]] == ["sample"]
    assert card["training_repositories"][0]["file_sha256"]
    names_out = tmp_path / "names"
    proc = run_cli("train", "--dataset", str(ds), "--out", str(names_out), "--generator",
                   "code2lora-names", "--names-rank", "16", "--names-max", "5", "--name-weight",
                   "2", "--names-contexts", "3", "--json", *common)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names_card = json.loads((names_out / "hypernet.json").read_text())
    assert names_card["generator"] == "code2lora-names"
    config = names_card["config"]
    assert (config["names_rank"], config["names_max"], config["names_contexts"]) == (16, 5, 3)
    assert names_card["training"]["config"]["name_weight"] == 2.0
    proc = run_cli("train", "--dataset", str(ds), "--out", str(tmp_path / "no"), "--generator",
                   "code2lora-names", "--names-rank", "1", *common)  # fmt: skip
    assert proc.returncode == 1 and "--names-rank must be at least 2" in proc.stderr
    proc = run_cli("train", "--dataset", str(ds), "--out", str(tmp_path / "no"), "--generator",
                   "code2lora-names", "--name-weight", "0", *common)  # fmt: skip
    assert proc.returncode == 1 and "--name-weight must be above 0" in proc.stderr
    assert not (tmp_path / "no").exists()
    for extra in (["--generator", "shine"], ["--repos", str(repo.root)]):
        proc = run_cli("train", "--dataset", str(ds), "--out", str(out), *common, *extra)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_shared_lora_baseline_trains_on_a_dataset_and_is_scored_as_a_checkpoint(
    tmp_path: Path, reserved: Path
):
    """`train --generator shared-lora --dataset`: a plain LoRA on the static tasks, its card
    naming the base model and the dataset's repositories; `bench --generator-dir` scores it on
    both tracks without training, and its manifest takes part in the contamination check."""
    from benchmark.report import find_row

    repo = _repo(tmp_path / "sample")
    ds = tmp_path / "ds"
    _build([repo.root], ds, reserved)
    lora = tmp_path / "lora"
    common = ["--model", "tiny-random", "--steps", "2"]
    proc = run_cli("train", "--generator", "shared-lora", "--dataset", str(ds), "--out",
                   str(lora), "--json", *common)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 2
    assert "step 2/2  loss" in proc.stderr  # progress on stderr, JSON alone on stdout
    card = json.loads((lora / "repo2lora-baseline.json").read_text())
    assert card["generator"] == "shared-lora"
    assert card["base_model"]["model_key"] == INFO.model_key
    assert [r["name"] for r in card["training_repositories"]] == ["sample"]
    assert (lora / "adapter_model.safetensors").is_file()
    proc = run_cli("train", "--generator", "shared-lora", "--init-from", str(ds),
                   "--dataset", str(ds), "--out", str(tmp_path / "x"), *common)  # fmt: skip
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "holds no shared-lora baseline" in proc.stderr and not (tmp_path / "x").exists()
    for shape in (["--rank", "4"], ["--target-modules", "all-linear"]):  # not its shape
        proc = run_cli("train", "--generator", "shared-lora", "--init-from", str(lora), *shape,
                       "--dataset", str(ds), "--out", str(tmp_path / "x"), *common)  # fmt: skip
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "--rank 8 --target-modules attention" in proc.stderr, proc.stderr
        assert not (tmp_path / "x").exists()
    # trained on from the saved one, learning where targets end
    on = tmp_path / "lora-on"
    proc = run_cli("train", "--generator", "shared-lora", "--init-from", str(lora),
                   "--target-end", "on", "--dataset", str(ds), "--out", str(on), "--json",
                   *common)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    card = json.loads((on / "repo2lora-baseline.json").read_text())
    assert card["config"]["init_from"] == str(lora) and card["target_end"] is True

    out = tmp_path / "bench"
    args = ("bench", "--generator-dir", str(lora), "--model", "tiny-random", "--test-repos",
            str(repo.root), "--methods", "base,rag", "--max-tasks", "2", "--out", str(out),
            "--no-with-tests", "-q")  # fmt: skip
    proc = run_cli(*args, timeout=240)
    assert proc.returncode == 1 and "contaminated test repository: sample" in proc.stderr
    proc = run_cli(*args, "--allow-contaminated", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert list(report["contamination"]["contaminated"]) == ["sample"]
    assert not (out / "models").exists()  # nothing trained
    for track in ("static", "evo"):
        row = find_row(report["summary"], track, "cross-repo", "shared-lora")
        assert row is not None and row["n"] >= 1 and row["nll"] is not None, track
    assert report["training"]["shared-lora"]["checkpoint"] == str(lora)
    methods = {r["method"] for r in report["summary"]}
    assert "rag" in methods and not any(x.endswith("+tests") for x in methods)  # --no-with-tests


def test_a_repository_git_cannot_read_is_skipped_and_named(tmp_path: Path, reserved: Path):
    """A mirror missing an object (an old blob the walk reads) does not end a build: the
    repository is skipped with git's reason, nothing of it is written, and the others build."""
    broken = _repo(tmp_path / "broken").root
    good = _repo(tmp_path / "good").root

    def blobs(rev: str) -> set[str]:
        out = subprocess.run(["git", "ls-tree", "-r", rev], cwd=broken, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        return {line.split()[2] for line in out.splitlines()}

    first = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=broken,
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    gone = blobs(first) - blobs("HEAD")
    assert gone
    for sha in gone:
        (broken / ".git" / "objects" / sha[:2] / sha[2:]).unlink()
    res = _build([broken, good], tmp_path / "ds", reserved)
    assert res["built"] == ["good"]
    assert [s["name"] for s in res["skipped"]] == ["broken"]
    assert res["skipped"][0]["reason"].startswith("git cannot read it:")
    assert not (tmp_path / "ds" / "repos" / "broken").exists()
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert [r["name"] for r in manifest["training_repositories"]] == ["good"]
