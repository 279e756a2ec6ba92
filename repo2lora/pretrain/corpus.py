"""Builds the pretraining corpus: Python source from named, pinned sources (the standard
library, the installed environment, a pinned list of PyPI distributions), each file checked
(UTF-8, at most 1 MB, parses), reserved distributions dropped wherever they appear (vendored
copies included), exact duplicates removed by content hash and near-duplicates by MinHash LSH
(datasketch), split into train / held-out by distribution (seeded), written as JSONL shards
with a manifest. Resumable: each distribution's filtered files are kept in `OUT.partial/` and
the finished corpus appears at `OUT` by one rename, with `corpus.json` written last."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repo2lora.pretrain import sources
from repo2lora.pretrain.sources import Distribution, Requirement
from repo2lora.reserved import ReservedList, load_reserved, normalize_distribution
from repo_encoder.errors import UserError

CORPUS_FORMAT = 1
MANIFEST = "corpus.json"
HASHES = "file-sha256.tsv"  # sha256 of each kept file's text, and its split
DEFAULT_PACKAGE_LIST = (
    Path(__file__).resolve().parent.parent.parent / "data" / "corpus-packages.txt"
)


class CorpusError(UserError):
    """A corpus directory that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class SourceDoc:
    package: str  # the distribution it came from
    path: str
    text: str


@dataclass
class Corpus:
    train: list[SourceDoc]
    val: list[SourceDoc]
    manifest: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class CorpusConfig:
    package_list: str | None = str(DEFAULT_PACKAGE_LIST)  # None: no PyPI distributions
    reserved: str | None = None  # the eval-reserved list (None: shared/eval-reserved.tsv)
    stdlib: bool = True
    installed: bool = True
    # keep only these installed distributions (normalised names); None: all of them
    installed_only: tuple[str, ...] | None = None
    heldout_share: float = 0.06
    seed: int = 0
    near_dup_threshold: float = 0.85
    num_perm: int = 64
    shard_bytes: int = 64_000_000
    max_file_bytes: int = 1_000_000
    cache: str | None = None  # where downloads are kept (default: OUT.partial/downloads)


@dataclass
class DistStats:
    """What one distribution gave: kept files and bytes, and drops by reason."""

    name: str
    version: str
    origin: str
    license: str
    split: str
    files: int = 0
    bytes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def split_of(dist: Distribution, cfg: CorpusConfig) -> str:
    """Held-out by a seeded hash of the distribution's name; the standard library trains."""
    if dist.origin == "stdlib":
        return "train"
    key = f"{cfg.seed}:{normalize_distribution(dist.name)}".encode()
    u = int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if u < cfg.heldout_share else "train"


def check_file(data: bytes | None, max_bytes: int) -> tuple[str | None, str]:
    """(reason it is dropped or None, its text)."""
    if data is None or len(data) > max_bytes:
        return "over_1mb", ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", ""
    if not text.strip():
        return "empty", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "does_not_parse", ""
    return None, text


def filter_distribution(
    files: Iterable[tuple[str, bytes | None]],
    reserved: ReservedList,
    cfg: CorpusConfig,
    stats: DistStats,
    reserved_dropped: Counter[str],
) -> Iterator[dict[str, str]]:
    """The distribution's files that pass every check, as {"p": path, "t": text}."""
    for path, data in files:
        owner = reserved.path_reservation(path)
        if owner is not None:
            stats.dropped["reserved"] = stats.dropped.get("reserved", 0) + 1
            reserved_dropped[owner] += 1
            continue
        reason, text = check_file(data, cfg.max_file_bytes)
        if reason is not None:
            stats.dropped[reason] = stats.dropped.get(reason, 0) + 1
            continue
        yield {"p": path, "t": text}


@dataclass
class BuildSummary:
    out: str
    distributions: int
    failed: list[dict[str, str]]
    refused_reserved: list[str]
    files: dict[str, int]
    bytes: dict[str, int]
    dropped: dict[str, int]
    reserved_files_dropped: dict[str, int]
    seconds: float = 0.0


def _key(dist: Distribution) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{dist.origin}-{dist.name}-{dist.version}")


def _plan(
    cfg: CorpusConfig, reserved: ReservedList
) -> tuple[
    list[tuple[Distribution, Callable[[], Iterable[tuple[str, bytes | None]]]]],
    list[Requirement],
    list[str],
]:
    """The sources in build order: stdlib, installed distributions, pinned PyPI ones."""
    plan: list[tuple[Distribution, Callable[[], Iterable[tuple[str, bytes | None]]]]] = []
    refused: list[str] = []
    if cfg.stdlib:
        dist, root = sources.stdlib_distribution()
        plan.append((dist, lambda root=root: sources.stdlib_files(root)))  # type: ignore[misc]
    if cfg.installed:
        only = {normalize_distribution(n) for n in cfg.installed_only or ()}
        for dist, paths in sources.installed_distributions():
            if only and normalize_distribution(dist.name) not in only:
                continue
            if reserved.distribution_reserved(dist.name):
                refused.append(f"{dist.name}=={dist.version}")
                continue
            plan.append((dist, lambda paths=paths: sources.installed_files(paths)))  # type: ignore[misc]
        found = {normalize_distribution(d.name) for d, _ in plan} | {
            normalize_distribution(r.split("==")[0]) for r in refused
        }
        if only - found:
            raise CorpusError(
                f"not installed here: {', '.join(sorted(only - found))}; "
                "check the names given to --installed-only (pip list shows them)"
            )
    pypi: list[Requirement] = []
    if cfg.package_list:
        for req in sources.read_package_list(cfg.package_list):
            if reserved.distribution_reserved(req.name):
                refused.append(req.spec)
            else:
                pypi.append(req)
    return plan, pypi, refused


def build_corpus(
    out: str | Path,
    cfg: CorpusConfig,
    on_progress: Callable[[str, int, int], None] | None = None,
    workers: int = 1,
) -> BuildSummary:
    """Build (or finish an interrupted build of) the corpus at `out`. `on_progress(stage, done,
    total)` is called as it goes. The local distributions (standard library, installed) are
    checked and MinHash-signed in `workers` processes; the result does not depend on how many.
    Raises CorpusError when `out` already holds something else."""
    import time

    t0 = time.perf_counter()
    out = Path(out)
    if (out / MANIFEST).is_file():
        raise CorpusError(f"{out} already holds a finished corpus; choose another --out")
    if out.exists():
        raise CorpusError(f"{out} exists and is not a corpus; choose another --out")
    reserved = load_reserved(cfg.reserved)
    plan, pypi, refused = _plan(cfg, reserved)
    work = out.with_name(out.name + ".partial")
    # what decides the content: a build resumed with other options would mix two corpora
    started = {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items() if k != "cache"}
    if (work / "options.json").is_file():
        before = json.loads((work / "options.json").read_text())
        if before != started:
            changed = sorted(
                k for k in set(before) | set(started) if before.get(k) != started.get(k)
            )
            raise CorpusError(
                f"{work} was started with other options ({', '.join(changed)}); run again with "
                f"those, or remove {work} to start afresh"
            )
    dists_dir = work / "dists"
    dists_dir.mkdir(parents=True, exist_ok=True)
    (work / "options.json").write_text(json.dumps(started, sort_keys=True))
    cache = Path(cfg.cache) if cfg.cache else work / "downloads"
    failed: list[dict[str, str]] = []
    total = len(plan) + len(pypi)
    done = 0

    order: list[str] = []
    for key in _extract_all(plan, dists_dir, reserved, cfg, workers):
        order.append(key)
        done += 1
        if on_progress:
            on_progress("extract", done, total)
    for req in pypi:
        try:
            archive = sources.download(req, cache)
            dist = Distribution(
                req.name, req.version, "pypi", sources.archive_license(archive), archive.name
            )
            _extract(dist, lambda a=archive: sources.archive_files(a), dists_dir, reserved, cfg)  # type: ignore[misc]
            order.append(_key(dist))
        except Exception as e:
            failed.append({"distribution": req.spec, "error": str(e)[:300]})
        done += 1
        if on_progress:
            on_progress("extract", done, total)
    summary = _assemble(work, out, order, cfg, failed, refused, on_progress)
    summary.seconds = round(time.perf_counter() - t0, 1)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["build_seconds"] = summary.seconds
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    shutil.rmtree(work, ignore_errors=True)
    return summary


Plan = list[tuple[Distribution, Callable[[], Iterable[tuple[str, bytes | None]]]]]


def _extract(
    dist: Distribution,
    files: Callable[[], Iterable[tuple[str, bytes | None]]],
    dists_dir: Path,
    reserved: ReservedList,
    cfg: CorpusConfig,
) -> str:
    """Check one distribution's files and sign each kept one (MinHash), into
    `dists_dir/KEY.jsonl`, `KEY.minhash.npy` and, last, `KEY.json` (which marks it done, so an
    interrupted build resumes here). Returns its key."""
    import numpy as np
    from datasketch import MinHash

    key = _key(dist)
    final = dists_dir / f"{key}.json"
    if final.is_file() and (dists_dir / f"{key}.minhash.npy").is_file():  # (older builds: none)
        return key
    stats = DistStats(dist.name, dist.version, dist.origin, dist.license, split_of(dist, cfg))
    reserved_dropped: Counter[str] = Counter()
    template = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
    signatures: list[Any] = []
    tmp = dists_dir / f"{key}.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        for doc in filter_distribution(files(), reserved, cfg, stats, reserved_dropped):
            fh.write(json.dumps(doc) + "\n")
            mh = template.copy()
            mh.update_batch(list(_shingles(doc["t"])))
            signatures.append(mh.hashvalues)
    dtype = template.hashvalues.dtype
    sig = np.array(signatures, dtype=dtype).reshape(len(signatures), cfg.num_perm)
    with (dists_dir / f"{key}.minhash.npy.tmp").open("wb") as sfh:
        np.save(sfh, sig)
    os.replace(dists_dir / f"{key}.minhash.npy.tmp", dists_dir / f"{key}.minhash.npy")
    os.replace(tmp, dists_dir / f"{key}.jsonl")
    meta = {"stats": asdict(stats), "reserved_dropped": dict(reserved_dropped)}
    (dists_dir / f"{key}.json.tmp").write_text(json.dumps(meta))
    os.replace(dists_dir / f"{key}.json.tmp", final)
    return key


_FORKED: tuple[Plan, Path, ReservedList, CorpusConfig] | None = None


def _extract_forked(i: int) -> str:
    assert _FORKED is not None
    plan, dists_dir, reserved, cfg = _FORKED
    return _extract(*plan[i], dists_dir, reserved, cfg)


def _extract_all(
    plan: Plan, dists_dir: Path, reserved: ReservedList, cfg: CorpusConfig, workers: int
) -> Iterator[str]:
    """`_extract` over the plan, in `workers` forked processes (each inherits the plan, whose
    file lists are closures); yields the keys in plan order as they finish."""
    global _FORKED
    if workers <= 1 or len(plan) <= 1:
        for dist, files in plan:
            yield _extract(dist, files, dists_dir, reserved, cfg)
        return
    import multiprocessing

    _FORKED = (plan, dists_dir, reserved, cfg)
    try:
        # largest first would balance better, but sizes are unknown before reading; small
        # chunks keep the processes busy
        with multiprocessing.get_context("fork").Pool(min(workers, len(plan))) as pool:
            yield from pool.imap(_extract_forked, range(len(plan)), chunksize=1)
    finally:
        _FORKED = None


def _shingles(text: str) -> set[bytes]:
    toks = re.findall(r"\w+|[^\s\w]", text)
    return {" ".join(toks[i : i + 5]).encode() for i in range(max(1, len(toks) - 4))}


def _assemble(
    work: Path,
    out: Path,
    order: list[str],
    cfg: CorpusConfig,
    failed: list[dict[str, str]],
    refused: list[str],
    on_progress: Callable[[str, int, int], None] | None,
) -> BuildSummary:
    """Deduplicate across every distribution (first seen kept), split, shard, manifest,
    then rename the result into place."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=cfg.near_dup_threshold, num_perm=cfg.num_perm)
    template = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
    seen: set[str] = set()
    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    writers = {s: _ShardWriter(final / s, cfg.shard_bytes) for s in ("train", "heldout")}
    dists: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    # sha256 of every kept file, so a test repository can be checked against the corpus
    hashes = (final / HASHES).open("w", encoding="utf-8")
    reserved_files: Counter[str] = Counter()
    for i, key in enumerate(order):
        meta = json.loads((work / "dists" / f"{key}.json").read_text())
        stats = DistStats(**meta["stats"])
        reserved_files.update(meta["reserved_dropped"])
        signatures = np.load(work / "dists" / f"{key}.minhash.npy")
        with (work / "dists" / f"{key}.jsonl").open(encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                doc = json.loads(line)
                h = hashlib.sha256(doc["t"].encode()).hexdigest()
                if h in seen:
                    stats.dropped["exact_duplicate"] = stats.dropped.get("exact_duplicate", 0) + 1
                    continue
                seen.add(h)
                mh = MinHash(
                    num_perm=cfg.num_perm,
                    seed=cfg.seed,
                    hashvalues=signatures[n],
                    permutations=template.permutations,
                    scheme=template.scheme,
                )
                if lsh.query(mh):
                    stats.dropped["near_duplicate"] = stats.dropped.get("near_duplicate", 0) + 1
                    continue
                lsh.insert(f"{i}:{n}", mh)
                writers[stats.split].write({"d": stats.name, "p": doc["p"], "t": doc["t"]})
                hashes.write(f"{h}\t{stats.split}\n")
                stats.files += 1
                stats.bytes += len(doc["t"].encode())
        dropped.update(stats.dropped)
        dists.append(asdict(stats))
        if on_progress:
            on_progress("deduplicate", i + 1, len(order))
    shards = {s: w.close() for s, w in writers.items()}
    hashes.close()
    files = {s: sum(d["files"] for d in dists if d["split"] == s) for s in writers}
    nbytes = {s: sum(d["bytes"] for d in dists if d["split"] == s) for s in writers}
    if not files["train"] or not files["heldout"]:
        missing = "held-out" if not files["heldout"] else "training"
        raise CorpusError(
            f"the corpus has no {missing} file; add distributions or change --heldout-share"
        )
    manifest = {
        "format": CORPUS_FORMAT,
        "config": asdict(cfg),
        "reserved_list": str(load_reserved(cfg.reserved).source),
        "distributions": dists,
        "files": files,
        "bytes": nbytes,
        "dropped": dict(dropped),
        "reserved_files_dropped": dict(reserved_files),
        "refused_reserved_distributions": refused,
        "failed": failed,
        "shards": shards,
    }
    (final / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(final, out)
    return BuildSummary(
        str(out), len(dists), failed, refused, files, nbytes, dict(dropped), dict(reserved_files)
    )


class _ShardWriter:
    """JSONL shards of at most `limit` bytes each, with their sha256."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict[str, Any]] = []
        self.fh: Any = None
        self.size = 0

    def write(self, doc: dict[str, str]) -> None:
        line = (json.dumps(doc) + "\n").encode()
        if self.fh is None or self.size + len(line) > self.limit:
            self._next()
        self.fh.write(line)
        self.size += len(line)

    def _next(self) -> None:
        self._finish()
        self.fh = (self.folder / f"shard-{len(self.shards):05d}.jsonl").open("wb")
        self.shards.append({"file": f"{self.folder.name}/{Path(self.fh.name).name}"})
        self.size = 0

    def _finish(self) -> None:
        if self.fh is not None:
            self.fh.close()
            p = Path(self.fh.name)
            self.shards[-1].update(bytes=p.stat().st_size, sha256=_sha256(p))
            self.fh = None

    def close(self) -> list[dict[str, Any]]:
        self._finish()
        return self.shards


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(corpus_dir: str | Path) -> dict[str, Any]:
    """The manifest of a finished corpus; a clear error for anything else."""
    d = Path(corpus_dir)
    if (d / MANIFEST).is_file():
        return dict(json.loads((d / MANIFEST).read_text()))
    if d.with_name(d.name + ".partial").exists():
        raise CorpusError(
            f"the corpus at {d} is unfinished (an interrupted build); run "
            f"`repo2lora corpus build --out {d}` again to finish it"
        )
    raise CorpusError(f"{d} is not a corpus; build one with `repo2lora corpus build --out {d}`")


def iter_docs(corpus_dir: str | Path, split: str) -> Iterator[SourceDoc]:
    """The documents of one split ("train" or "heldout"), in corpus order."""
    d = Path(corpus_dir)
    manifest = read_manifest(d)
    for shard in manifest["shards"][split]:
        with (d / shard["file"]).open(encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                yield SourceDoc(doc["d"], doc["p"], doc["t"])


def load_corpus(corpus_dir: str | Path) -> Corpus:
    """The whole corpus in memory (train and held-out documents) with its manifest."""
    manifest = read_manifest(corpus_dir)
    return Corpus(
        list(iter_docs(corpus_dir, "train")), list(iter_docs(corpus_dir, "heldout")), manifest
    )


def subset_corpus(
    src: str | Path, out: str | Path, train_bytes: int, heldout_bytes: int, seed: int = 0
) -> dict[str, Any]:
    """A smaller corpus of the same format (to carry to a GPU machine): a seeded sample of each
    split's documents up to the given bytes, whole distributions' splits unchanged. Its
    manifest keeps the source's distributions and says what it is a subset of."""
    import random
    import tempfile

    manifest = read_manifest(src)
    dest = Path(out)
    if dest.exists():
        raise CorpusError(f"{dest} exists; choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=".subset-", dir=dest.parent))
    shards: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, int] = {}
    for split, limit in (("train", train_bytes), ("heldout", heldout_bytes)):
        docs = list(iter_docs(src, split))
        random.Random(seed).shuffle(docs)
        writer = _ShardWriter(tmp / split, manifest["config"].get("shard_bytes", 64_000_000))
        used = 0
        for d in docs:
            if used >= limit:
                break
            writer.write({"d": d.package, "p": d.path, "t": d.text})
            used += len(d.text.encode())
        shards[split] = writer.close()
        totals[split] = used
    sub = {**manifest, "shards": shards, "subset": {"of": str(src), "bytes": totals, "seed": seed}}
    (tmp / MANIFEST).write_text(json.dumps(sub, indent=1, sort_keys=True))
    os.replace(tmp, dest)
    return {"out": str(dest), "bytes": totals}
