"""Builds a hypernetwork training dataset from local git repositories (work trees or bare git
directories such as the pool's `fetch` mirrors): per repository, the assertion tasks at its
commit (static), the evolution walk (the last commits' chunk diffs, with the assertions each
adds) and cross-file line-completion tasks (`line_tasks`), with the encoder input of each (chunk
vectors, encoded once and cached in the repository's state store), and a manifest of every
repository's name, URL, commit, task counts and file hashes.

Layout of `OUT`:
* `manifest.json`: the settings and one entry per repository (what a model card's
  `training_repositories` and the benchmark's contamination check read);
* `repos/<owner+name>/`: `tasks.jsonl` (one task a line: kind `static`, `evo` (with its step in
  the walk) or `line` (with its held-out file)), `encoding.safetensors` (`snapshot` [n, d], and
  for the walk `walk.start` and per commit t `diff.t.in` / `diff.t.out`), `chunks.json` (the
  snapshot's chunk paths, in row order: a line task's encoder input drops its file's rows) and
  `summary.json`;
* `worktrees/<owner+name>/`: for a bare git directory, a `--shared --no-checkout` clone (no
  files checked out, objects borrowed) that holds its state store, so the bare directory is
  never written to.

Every repository's directory is written aside and renamed into place, and the manifest is
rewritten (atomically) after each one, so an interrupted build resumes where it stopped: a
repository whose summary matches the settings is kept as it is, and the vectors encoded before
the interruption come from the cache. Repositories on the evaluation-reserved list are refused
before anything is written."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import git
import torch
from safetensors.torch import load_file, save_file

from evo_state.store import open_store
from repo2lora.atomic import atomic_directory, write_text_atomic
from repo2lora.models.loading import LoadedModel
from repo2lora.progress import ProgressFn, no_progress
from repo2lora.reserved import load_reserved
from repo2lora.snapshot import SnapshotConfig, encode_snapshot, open_context
from repo2lora.tasks.datasets import encode_repo
from repo2lora.tasks.line_tasks import LineTaskConfig, mine_line_tasks
from repo2lora.tasks.miner import AssertionTask, MinerConfig, mine
from repo2lora.tasks.provenance import (
    Provenance,
    mirror_owner_name,
    network_url,
    owner_name_of_url,
    training_repository,
)
from repo2lora.training.data import RepoEncoding
from repo_encoder.chunk import Chunk
from repo_encoder.chunker import chunk_source
from repo_encoder.errors import UserError
from repo_encoder.names import NameIndex
from repo_encoder.snapshot import read_snapshot

FORMAT_VERSION = 2  # 2: line tasks read with ast (names the file binds are its own)
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
NAMES = "names.json"  # per file of the snapshot: the names it defines and mentions
TEXTS = "texts.json"  # a packed copy's snapshot chunk texts, [path, text] in chunk order
# the pool lists of the checkout (`benchmark.repo_pool` writes them): URLs and screened commits
DEFAULT_POOL = Path(__file__).resolve().parents[2] / "data" / "hypernet-pool"


@dataclass(frozen=True)
class DatasetConfig:
    """What decides a repository's data (a built repository is reused only for the same)."""

    max_commits: int = 30  # the walk covers at most this many last first-parent commits
    lines: LineTaskConfig = field(default_factory=LineTaskConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    max_prompt_tokens: int = MinerConfig.max_prompt_tokens or 1024

    def fingerprint(self, model_key: str) -> dict[str, Any]:
        return json.loads(
            json.dumps({"format": FORMAT_VERSION, "model_key": model_key, **asdict(self)})
        )


@dataclass(frozen=True)
class RepoSpec:
    """One input repository, resolved: where its git objects are, whether it is bare, its
    provenance and the directory name it gets under `OUT`."""

    path: Path
    bare: bool
    slug: str
    provenance: Provenance
    pool_split: str | None = None  # "train" / "heldout" when a pool list names it


@dataclass
class DatasetResult:
    out: str
    repositories: list[dict[str, Any]]
    built: list[str]
    cached: list[str]
    skipped: list[dict[str, str]]
    counts: dict[str, int]
    seconds: float


def read_pool(paths: Sequence[Path]) -> dict[str, dict[str, str]]:
    """Rows of pool TSVs (`owner_name`, `url`, `git_dir`, `head`), keyed by lower-case
    owner/name and by resolved `git_dir`, each with its split (the file's stem)."""
    rows: dict[str, dict[str, str]] = {}
    for p in paths:
        with p.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                if not row.get("owner_name"):
                    continue
                row = {**row, "split": p.stem}
                rows[row["owner_name"].lower()] = row
                if row.get("git_dir"):
                    rows[str(Path(row["git_dir"]).resolve())] = row
    return rows


def default_pool_files() -> list[Path]:
    return [p for p in (DEFAULT_POOL / "train.tsv", DEFAULT_POOL / "heldout.tsv") if p.is_file()]


def resolve_repos(
    paths: Sequence[str | Path],
    pool: dict[str, dict[str, str]],
    reserved_path: str | Path | None = None,
) -> list[RepoSpec]:
    """Every input checked before anything is written: a git repository with commits, not on
    the evaluation-reserved list (by owner/name or by a name equal to a reserved distribution
    or import name). Raises UserError naming the first bad one."""
    reserved = load_reserved(reserved_path)
    specs: list[RepoSpec] = []
    slugs: set[str] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise UserError(f"{p} does not exist; pass the path of a git repository")
        # a bare directory is read with git itself: a `fetch` mirror has no config file, and
        # GitPython would take its parent for a work tree
        bare = (p / "HEAD").is_file() and (p / "objects").is_dir()
        git_cmd = ["git", "--git-dir", str(p)] if bare else ["git", "-C", str(p)]
        git_dir = _git(git_cmd, "rev-parse", "--absolute-git-dir")
        if git_dir is None:
            raise UserError(f"{p.resolve()} is not a git repository (a work tree or a git dir)")
        head = _git(git_cmd, "rev-parse", "--verify", "-q", "HEAD^{commit}")
        if head is None:
            raise UserError(f"the repository at {p.resolve()} has no commits")
        top = p.resolve() if bare else Path(_git(git_cmd, "rev-parse", "--show-toplevel") or p)
        origin = _git(git_cmd, "config", "--get", "remote.origin.url")
        url = network_url(origin) if origin else None
        row = pool.get(str(Path(git_dir).resolve())) or pool.get(str(p.resolve()))
        owner_name = (
            (row or {}).get("owner_name")
            or (owner_name_of_url(url) if url else None)
            or (mirror_owner_name(p) if bare else None)
        )
        row = row or (pool.get(owner_name.lower()) if owner_name else None)
        if row and row.get("url"):
            url = row["url"]
        elif url is None and owner_name and bare and mirror_owner_name(p):
            url = f"https://github.com/{owner_name}"
        short = owner_name.split("/")[-1] if owner_name else top.name.removesuffix(".git")
        if (owner_name and reserved.repository_reserved(owner_name)) or reserved.name_reserved(
            short
        ):
            raise UserError(
                f"{owner_name or short} ({p}) is reserved for evaluation by {reserved.source}; "
                "drop it from --repos"
            )
        commit = head
        if row and row.get("head"):  # the screened commit, when the repository has it
            commit = _git(git_cmd, "rev-parse", "--verify", "-q", row["head"] + "^{commit}") or head
        name = owner_name or short
        slug = name.replace("/", "+")
        while slug in slugs:
            slug += "-2"
        slugs.add(slug)
        prov = Provenance(name, url, commit)
        specs.append(RepoSpec(p if bare else top, bare, slug, prov, (row or {}).get("split")))
    return specs


def names_by_file(chunks: Sequence[Chunk]) -> str:
    """`names.json`: each file's `NameIndex` (what it defines and mentions), so that the index
    of a snapshot without one file (a line task's) is the sum of the others."""
    by_path: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_path.setdefault(c.path, []).append(c)
    doc = {p: NameIndex.of(cs).to_json() for p, cs in sorted(by_path.items())}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def add_missing_names(
    target: Path, spec: RepoSpec, root: Path, cfg: DatasetConfig, model: LoadedModel
) -> None:
    """Write `names.json` into a repository built before datasets kept names: the snapshot's
    chunks come from its state store (cached vectors: nothing is encoded again)."""
    _ctx, snap = _snapshot(root, spec, cfg, model)
    write_text_atomic(target / NAMES, names_by_file(snap.chunks))


def _snapshot(
    root: Path,
    spec: RepoSpec,
    cfg: DatasetConfig,
    model: LoadedModel,
    progress: ProgressFn = no_progress,
) -> tuple[Any, Any]:
    """The repository's context and its snapshot at the spec's commit (vectors from the state
    store's cache where it has them)."""
    ctx = open_context(
        root, config=cfg.snapshot, loaded_model=model, with_hypernet=False, progress=progress
    )
    with open_store(ctx.root) as store:
        snap = encode_snapshot(ctx, store, ctx.repo.commit(spec.provenance.commit))
    return ctx, snap


def _git(cmd: list[str], *args: str) -> str | None:
    """The stripped output of a git command, or None when it fails."""
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def work_tree(spec: RepoSpec, out: Path) -> Path:
    """Where the repository is read and its state store lives: its own work tree, or for a
    bare directory a `--shared --no-checkout` clone under `out/worktrees` (made once)."""
    if not spec.bare:
        return spec.path
    target = out / "worktrees" / spec.slug
    if (target / ".git").is_dir():
        return target
    with atomic_directory(target) as tmp:
        proc = subprocess.run(
            ["git", "clone", "-q", "--shared", "--no-checkout", str(spec.path.resolve()), str(tmp)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            msg = (proc.stderr.strip().splitlines() or ["git clone failed"])[-1]
            raise UserError(f"cannot read {spec.path} through a clone: {msg}")
    return target


def _encoding_tensors(snapshot: torch.Tensor, walk: RepoEncoding | None) -> dict[str, Any]:
    tensors: dict[str, torch.Tensor] = {"snapshot": snapshot.contiguous()}
    if walk is not None:
        tensors["walk.start"] = walk.vectors.contiguous()
        for t, (brought_in, taken_out, _) in enumerate(walk.diffs, start=1):
            tensors[f"diff.{t}.in"] = brought_in.contiguous()
            tensors[f"diff.{t}.out"] = taken_out.contiguous()
    return tensors


def build_repo(
    spec: RepoSpec,
    root: Path,
    model: LoadedModel,
    cfg: DatasetConfig,
    fingerprint: dict[str, Any],
    target: Path,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Collect one repository's three kinds of tasks and their encoder input into `target`
    (written aside, renamed into place); returns its summary."""
    started = time.perf_counter()
    ctx, snap = _snapshot(root, spec, cfg, model, progress)
    name, sha = spec.provenance.name, spec.provenance.commit
    commit = ctx.repo.commit(sha)
    miner = MinerConfig(exclusion=cfg.snapshot.exclusion, max_prompt_tokens=cfg.max_prompt_tokens)
    static = mine(ctx.repo, commit, miner, repo_name=name).tasks
    files = read_snapshot(
        ctx.repo, commit, cfg.snapshot.exclusion, cfg.snapshot.chunker.max_file_bytes
    ).files
    lines = mine_line_tasks(name, sha, files, snap.chunks, cfg.lines)

    total = int(ctx.repo.git.rev_list("--first-parent", "--count", sha))
    n_walk = min(total - 1, cfg.max_commits)
    walk: RepoEncoding | None = None
    evo: list[tuple[int, AssertionTask]] = []
    if n_walk >= 1:
        start = ctx.repo.commit(f"{sha}~{n_walk}").hexsha
        data = encode_repo(
            root, model, rev=sha, evolving_from=start, config=cfg.snapshot, miner=miner, name=name
        )
        walk, evo = data.encoding, data.evo_tasks

    rows: list[dict[str, Any]] = []
    for t in static:
        rows.append({"kind": "static", **_task_fields(t), "test_qualname": t.test_qualname})
    for step, t in evo:
        rows.append({"kind": "evo", "step": step, **_task_fields(t)})
    for lt in lines:
        rows.append(
            {
                "kind": "line",
                "task_id": lt.task_id,
                "commit": lt.commit,
                "path": lt.path,
                "line": lt.line,
                "prefix": lt.prefix,
                "target": lt.target,
                "names": list(lt.names),
            }
        )
    summary: dict[str, Any] = {
        **training_repository(spec.provenance, commit),
        "path": str(spec.path),
        "pool_split": spec.pool_split,
        "counts": {"static": len(static), "evo": len(evo), "line": len(lines)},
        "chunks": len(snap.chunks),
        "encoded": snap.encoded.encoded,
        "walk": walk.commits if walk is not None else [sha],
        "walk_counts": [list(c) for _, _, c in walk.diffs] if walk is not None else [],
        "fingerprint": fingerprint,
    }
    with atomic_directory(target) as tmp:
        (tmp / "tasks.jsonl").write_text(
            "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8"
        )
        save_file(_encoding_tensors(snap.encoded.vectors, walk), str(tmp / "encoding.safetensors"))
        (tmp / "chunks.json").write_text(json.dumps([c.path for c in snap.chunks]))
        (tmp / NAMES).write_text(names_by_file(snap.chunks))
        summary["seconds"] = round(time.perf_counter() - started, 2)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    return summary


def _task_fields(t: AssertionTask) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "commit": t.commit,
        "path": t.path,
        "line": t.line,
        "prefix": t.prefix,
        "target": t.target,
    }


def _manifest_entry(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "url", "commit", "pool_split", "counts", "chunks", "file_sha256", "seconds")
    return {k: summary[k] for k in keep if k in summary}


def build_dataset(
    paths: Sequence[str | Path],
    out: str | Path,
    model_key: str,
    load_model: Callable[[], LoadedModel],
    cfg: DatasetConfig = DatasetConfig(),
    *,
    pool_files: Sequence[Path] | None = None,
    reserved: str | Path | None = None,
    progress: ProgressFn = no_progress,
) -> DatasetResult:
    """Build (or resume) the dataset of `paths` in `out`. The base model is loaded only when
    some repository must be built; `model_key` (the vector cache's key) decides reuse."""
    started = time.perf_counter()
    if not paths:
        raise UserError("no repositories: pass --repos PATH...")
    specs = resolve_repos(
        paths, read_pool(default_pool_files() if pool_files is None else pool_files), reserved
    )
    root = Path(out)
    fingerprint = cfg.fingerprint(model_key)
    loaded: list[LoadedModel] = []
    built: list[str] = []
    cached: list[str] = []
    skipped: list[dict[str, str]] = []
    summaries: dict[str, dict[str, Any]] = {}
    progress("repositories", 0, len(specs))
    for i, spec in enumerate(specs, start=1):
        target = root / "repos" / spec.slug
        summary_file = target / SUMMARY
        done = json.loads(summary_file.read_text()) if summary_file.is_file() else None
        if (
            done
            and done.get("fingerprint") == fingerprint
            and done.get("commit") == (spec.provenance.commit)
        ):
            summaries[spec.slug] = done
            cached.append(spec.provenance.name)
            if not (target / NAMES).is_file():  # built before datasets kept names
                if not loaded:
                    loaded.append(load_model())
                add_missing_names(target, spec, work_tree(spec, root), cfg, loaded[0])
        else:
            if not loaded:
                loaded.append(load_model())
            try:
                wt = work_tree(spec, root)
                summaries[spec.slug] = build_repo(
                    spec, wt, loaded[0], cfg, fingerprint, target, progress
                )
                built.append(spec.provenance.name)
            except UserError as exc:
                skipped.append({"name": spec.provenance.name, "reason": str(exc)})
            except (git.GitError, ValueError) as exc:  # a mirror missing an object: go on
                skipped.append({"name": spec.provenance.name, "reason": _git_failure(exc)})
        _write_manifest(root, fingerprint, summaries, skipped)
        progress("repositories", i, len(specs))
    entries = [_manifest_entry(s) for s in summaries.values()]
    counts = {k: sum(e["counts"][k] for e in entries) for k in ("static", "evo", "line")}
    return DatasetResult(
        str(root),
        [{k: v for k, v in e.items() if k != "file_sha256"} for e in entries],
        built,
        cached,
        skipped,
        counts,
        round(time.perf_counter() - started, 2),
    )


def _git_failure(exc: Exception) -> str:
    """One line for a repository git could not read (GitPython raises a GitCommandError, or a
    ValueError for an object `cat-file` cannot find)."""
    text = str(exc.stderr) if isinstance(exc, git.GitCommandError) else str(exc)
    last = (text.strip().splitlines() or [type(exc).__name__])[-1].strip(" '")
    return f"git cannot read it: {last}"


def _write_manifest(
    root: Path,
    fingerprint: dict[str, Any],
    summaries: dict[str, dict[str, Any]],
    skipped: list[dict[str, str]],
) -> None:
    """The manifest of every repository `root` holds with these settings: this run's and those
    earlier runs built there (a dataset grows by building more repositories into it)."""
    held = dict(summaries)
    for f in sorted((root / "repos").glob(f"*/{SUMMARY}")):
        slug = f.parent.name
        if slug not in held:
            earlier = json.loads(f.read_text())
            if earlier.get("fingerprint") == fingerprint:
                held[slug] = earlier
    doc = {
        "settings": fingerprint,
        "training_repositories": [_manifest_entry(held[k]) for k in sorted(held)],
        "skipped": skipped,
    }
    write_text_atomic(root / MANIFEST, json.dumps(doc, indent=1, sort_keys=True) + "\n")


@dataclass
class BuiltRepo:
    """One built repository read back: its summary, tasks, snapshot encoding (and the walk's,
    when it has one; read from `encoding.safetensors` when first asked for, so a caller that
    reads only tasks and texts works on a packed copy that has no vectors) and the snapshot's
    chunk paths in row order."""

    summary: dict[str, Any]
    tasks: list[dict[str, Any]]
    chunk_paths: list[str]
    file_names: dict[str, NameIndex] | None = None  # `names.json`, when read
    directory: Path = Path()  # where it was read from (`repos/<owner+name>`)
    _all_names: NameIndex | None = field(default=None, repr=False)
    _texts: list[tuple[str, str]] | None = field(default=None, repr=False)
    _encodings: tuple[RepoEncoding, RepoEncoding | None] | None = field(default=None, repr=False)

    @property
    def snapshot(self) -> RepoEncoding:
        return self._encoded()[0]

    @property
    def walk(self) -> RepoEncoding | None:
        return self._encoded()[1]

    def _encoded(self) -> tuple[RepoEncoding, RepoEncoding | None]:
        if self._encodings is None:
            path = self.directory / "encoding.safetensors"
            if not path.is_file():
                raise UserError(
                    f"{self.directory} has no chunk vectors (a packed copy); use the built "
                    "dataset itself for a generator that reads them"
                )
            tensors = load_file(str(path))
            name = self.summary["name"]
            snapshot = RepoEncoding(name, tensors["snapshot"], commits=[self.summary["commit"]])
            walk = None
            if "walk.start" in tensors:
                diffs = [
                    (tensors[f"diff.{t}.in"], tensors[f"diff.{t}.out"], tuple(c))
                    for t, c in enumerate(self.summary["walk_counts"], start=1)
                ]
                walk = RepoEncoding(
                    name, tensors["walk.start"], diffs=diffs, commits=self.summary["walk"]
                )
            self._encodings = (snapshot, walk)
        return self._encodings

    def names(self, without: str | None = None) -> NameIndex:
        """The snapshot's names (`without` one file's); a UserError for a dataset built
        before datasets kept names."""
        if self.file_names is None:
            raise UserError(
                f"the dataset's {self.summary['name']} has no {NAMES}: run `repo2lora dataset "
                "build` again on it (it adds the names, encoding nothing)"
            )
        if self._all_names is None:  # every file's, summed once
            self._all_names = NameIndex()
            for index in self.file_names.values():
                self._all_names.merge(index)
        out = self._all_names.copy()
        if without in self.file_names:
            out.subtract(self.file_names[without])
        return out

    def texts(self, without: str | None = None) -> list[str]:
        """The snapshot's chunk texts (`without` one file's), chunked afresh from the source
        repository at the built commit (the dataset keeps vectors, not code; a packed copy
        keeps the texts); a UserError when that repository is gone."""
        return [t for p, t in self.chunk_texts() if p != without]

    def chunk_texts(self) -> list[tuple[str, str]]:
        """(path, text) of every chunk of the snapshot, in order, as `texts` reads them."""
        if self._texts is None and (self.directory / TEXTS).is_file():  # a packed copy
            self._texts = [(p, t) for p, t in json.loads((self.directory / TEXTS).read_text())]
        if self._texts is None:
            clone = self.directory.parent.parent / "worktrees" / self.directory.name
            where = str(clone) if (clone / ".git").is_dir() else self.summary["path"]
            sha = self.summary["commit"]
            try:
                tree = git.Repo(where).commit(sha).tree
            except (git.GitError, ValueError, OSError) as e:
                raise UserError(
                    f"{self.summary['name']}: its source repository {where} at {sha[:12]} "
                    f"cannot be read ({type(e).__name__}); fetch it again to train a names "
                    "memory that reads how the code uses its names"
                ) from None
            self._texts = []
            for path in dict.fromkeys(self.chunk_paths):
                try:
                    data = tree[path].data_stream.read()
                except KeyError:
                    continue
                self._texts += [(path, c.text) for c in chunk_source(path, data).chunks]
        return self._texts

    def without(self, path: str, names: bool = False) -> RepoEncoding:
        """The snapshot encoding with `path`'s chunks left out (a line task's encoder input),
        with the names of the rest when `names`."""
        keep = torch.tensor([p != path for p in self.chunk_paths], dtype=torch.bool)
        vectors = self.snapshot.vectors[keep] if keep.numel() else self.snapshot.vectors
        return RepoEncoding(
            f"{self.snapshot.name}-{path}",
            vectors,
            commits=self.snapshot.commits,
            names=[self.names(without=path)] if names else [],
            texts=self.texts(without=path) if names else [],
        )


def built_repo_dirs(root: str | Path) -> list[Path]:
    """A built dataset's finished repositories (those with their summary), in name order; a
    UserError when `root` is not a built dataset."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise UserError(
            f"{root} is not a built dataset (no {MANIFEST}); run `repo2lora dataset build`"
        )
    return sorted(p for p in (root / "repos").iterdir() if (p / SUMMARY).is_file())


def check_encoded_by(repo: BuiltRepo, root: str | Path, model_key: str) -> None:
    """A UserError when a built repository's chunk vectors are another base model's."""
    found = repo.summary["fingerprint"]["model_key"]
    if found != model_key:
        raise UserError(
            f"{root} was encoded by base model {found}, not {model_key}: build it again "
            "with this --model, or use the model it was built with"
        )


def load_built_repo(directory: str | Path) -> BuiltRepo:
    d = Path(directory)
    summary = json.loads((d / SUMMARY).read_text())
    tasks = [json.loads(ln) for ln in (d / "tasks.jsonl").read_text().splitlines() if ln]
    file_names: dict[str, NameIndex] | None = None
    if (d / NAMES).is_file():
        read = {p: NameIndex.from_json(v) for p, v in json.loads((d / NAMES).read_text()).items()}
        file_names = {p: x for p, x in read.items() if x is not None}
        if len(file_names) != len(read):  # another format: build again
            file_names = None
    paths = json.loads((d / "chunks.json").read_text())
    return BuiltRepo(summary, tasks, paths, file_names, d)


def pack_dataset(root: str | Path, out: str | Path, texts: bool = True) -> dict[str, Any]:
    """A copy of a built dataset that travels (to a lent GPU machine, say): its manifest and
    each repository's summary, tasks, chunk paths and names, with the snapshot's chunk texts
    (`texts.json`, read from the source repositories here, so the copy needs none of them)
    unless `texts` is False, and without chunk vectors. What reads tasks and texts (a shared
    LoRA, `benchmark.finetune_ceiling`) gives the same results on it; a hypernetwork, which
    reads vectors, is refused in one line. Written aside and renamed into place."""
    dirs = built_repo_dirs(root)
    dest = Path(out)
    if dest.exists():
        raise UserError(f"{dest} exists; choose another --out")
    count = 0
    with atomic_directory(dest) as tmp:
        (tmp / "repos").mkdir()
        for d in dirs:
            repo_dir = tmp / "repos" / d.name
            repo_dir.mkdir()
            for f in (SUMMARY, "tasks.jsonl", "chunks.json", NAMES):
                if (d / f).is_file():
                    (repo_dir / f).write_bytes((d / f).read_bytes())
            if texts:
                (repo_dir / TEXTS).write_text(json.dumps(load_built_repo(d).chunk_texts()))
            count += 1
        doc = json.loads((Path(root) / MANIFEST).read_text())
        doc["packed_from"] = {"dataset": str(Path(root).resolve()), "texts": texts}
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return {"out": str(dest), "repositories": count, "texts": texts}
