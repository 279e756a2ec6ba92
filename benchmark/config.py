"""What decides a benchmark run's numbers: `BenchConfig`, the suite profiles `--suite NAME`
stands for, and the check that an output directory's cache was made with the same settings."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark import methods as m
from repo2lora.adapters.defaults import DEFAULT_RANK
from repo2lora.adapters.targets import DEFAULT_TARGETS
from repo2lora.training.shared import TrainConfig
from repo_encoder.errors import UserError

TRACKS = ("static", "evo")
IN_REPO = "in-repo"
CROSS_REPO = "cross-repo"
CONFIG_FILE = "bench-config.json"


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides a run's numbers (the output directory's cache is valid only for
    the same config). `suite` is one synthetic suite's name (`SYNTHETIC_SUITES`) or local
    repository paths."""

    suite: tuple[str, ...] = ("ci",)
    tracks: tuple[str, ...] = TRACKS
    methods: tuple[str, ...] = m.ALL_METHODS
    model: str | None = "tiny-random"
    seed: int = 0
    n_repos: int = 8  # synthetic suites only
    n_commits: int = 8
    test_repo_share: float = 0.25  # repositories held out entirely (cross-repo)
    # paths held out entirely (cross-repo), instead of a seeded `test_repo_share` of the suite:
    # the rest are the training repositories
    test_repos: tuple[str, ...] = ()
    in_repo_test_share: float = 0.5  # test functions held out inside training repositories
    eval: m.EvalConfig = field(default_factory=m.EvalConfig)
    max_commits: int = 30  # the evolution walk covers at most this many last commits
    max_eval_tasks: int | None = None  # per repository and track (a seeded subset)
    hypernet_steps: int = 300
    evo_steps: int = 300
    shine_steps: int = 150
    dnd_steps: int = 300
    dnd_collect_steps: int = 60  # per training repository: the LoRA checkpoints DnD imitates
    # where the evolving hypernetwork starts: "static" (the trained static hypernetwork's
    # encoder and head, trained further at `evo_init_lr_scale` x the learning rate) or "scratch"
    evo_init: str = "static"
    evo_init_lr_scale: float = TrainConfig.init_lr_scale
    # truncated BPTT: commits the evolving training backpropagates through per window
    tbptt_window: int = TrainConfig.tbptt_window
    hypernet_batch: int = 8
    hypernet_lr: float = 3e-3
    rank: int = DEFAULT_RANK
    lora_steps: int = 200
    per_repo_steps: int = 60
    lora_batch: int = 8
    lora_lr: float = 3e-3
    rag_top_k: int = 4
    rag_max_tokens: int = 128  # retrieval's share of the prompt budget
    # also score rag, code2lora-static and (on the walk) code2lora-evo with the test code visible
    with_tests: bool = True
    threads: int = 1  # torch CPU threads; one is fastest for small models on shared cores
    target_modules: tuple[str, ...] = DEFAULT_TARGETS  # what every LoRA method adapts
    # scoring given checkpoints (`--generator-dir`; "default": the shipped ones): nothing is
    # trained, every repository is held out, contaminated ones are refused unless allowed
    generator_dirs: tuple[str, ...] = ()
    allow_contaminated: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The fields a cached result depends on (not `threads`, `tracks` or `methods`:
        those select work, they do not change a finished repository's numbers)."""
        d = self.to_json()
        for k in ("threads", "tracks", "methods"):
            d.pop(k)
        for k in ("generator_dirs", "allow_contaminated"):  # older runs' caches stay valid
            if not d[k]:
                d.pop(k)
        return d


# Suite profiles: the sizes and training budgets `--suite NAME` stands for. `ci` is sized so
# that the whole run (both tracks, every method) takes a few minutes on 2 CPU cores with
# tiny-random (`make bench`); `quick` is the test suite's: the same kind of repositories, fewer
# of them and shorter training and completions, about a minute; `synthetic` is a larger suite
# for a longer run.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(
        model="tiny-random",
        n_repos=6,
        n_commits=6,
        hypernet_steps=150,
        evo_steps=100,
        shine_steps=20,
        dnd_steps=40,
        dnd_collect_steps=10,
        lora_steps=60,
        per_repo_steps=10,
        eval=m.EvalConfig(prompt_tokens=128, max_new_tokens=8),
    ),
    "ci": dict(
        model="tiny-random",
        n_repos=8,
        n_commits=8,
        hypernet_steps=300,
        evo_steps=200,
        lora_steps=200,
    ),
    "synthetic": dict(
        model="tiny-random",
        n_repos=24,
        n_commits=12,
        hypernet_steps=1200,
        evo_steps=1200,
        lora_steps=800,
        per_repo_steps=200,
    ),
    # local repositories: the embedded default model unless --model is given
    "paths": dict(model=None, max_eval_tasks=200, eval=m.EvalConfig(prompt_tokens=512)),
}


SYNTHETIC_SUITES = tuple(name for name in PROFILES if name != "paths")


def bench_config(suite: tuple[str, ...], **overrides: Any) -> BenchConfig:
    """The config for `suite` with its profile's defaults, then `overrides` (None = keep)."""
    profile = suite[0] if len(suite) == 1 and suite[0] in SYNTHETIC_SUITES else "paths"
    fields: dict[str, Any] = {"suite": suite, **PROFILES[profile]}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return BenchConfig(**fields)


def replace_eval(cfg: BenchConfig, **changes: Any) -> BenchConfig:
    """`cfg` with some of its `EvalConfig` fields changed."""
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **changes))


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), for comparing with a card."""
    return json.loads(json.dumps(value))


def check_config(out: Path, cfg: BenchConfig) -> None:
    """Refuse an output directory whose cache was made with other settings; otherwise record
    these settings in it."""
    path = out / CONFIG_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        now = as_json(cfg.fingerprint())
        if saved != now:
            changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            raise UserError(
                f"{out} holds a benchmark run with other settings ({', '.join(changed)}); "
                "pass a new --out, or the same settings to resume it"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.fingerprint(), indent=2, sort_keys=True) + "\n")


def method_list(text: str) -> tuple[str, ...]:
    """`--methods`: `all`, or comma-separated method names."""
    if text == "all":
        return m.ALL_METHODS
    return tuple(x.strip() for x in text.split(",") if x.strip())


def scored_suite(
    suite: tuple[str, ...], generator_dirs: tuple[str, ...], test_repos: tuple[str, ...]
) -> tuple[str, ...]:
    """The suite a run reads: scoring checkpoints on `--test-repos` alone (the suite left at
    its default) scores those repositories."""
    if generator_dirs and test_repos and suite == ("ci",):
        return test_repos
    return suite
