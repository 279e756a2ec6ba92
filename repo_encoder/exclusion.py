"""Decides which files the encoder may see: the leakage rule's test-file globs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

DEFAULT_TEST_GLOBS: tuple[str, ...] = (
    "tests/**",
    "test/**",
    "test_*.py",
    "*_test.py",
    "conftest.py",
)

ExclusionMode = Literal["source-only", "with-tests"]


@dataclass(frozen=True)
class ExclusionConfig:
    """What the encoder sees. `source-only` leaves out every file matching `test_globs`;
    `with-tests` keeps them (the benchmark then removes evaluated test functions itself)."""

    mode: ExclusionMode = "source-only"
    test_globs: tuple[str, ...] = DEFAULT_TEST_GLOBS


@lru_cache(maxsize=256)
def _glob_regex(glob: str) -> re.Pattern[str]:
    # `**` crosses directories, `*` and `?` do not. A glob matches the path or any suffix of it
    # that starts at a directory boundary, so `tests/**` also covers `pkg/tests/x.py`.
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            if i < len(glob) and glob[i] == "/":
                out.append("/?")
                i += 1
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile(r"(?:^|.*/)" + "".join(out) + r"\Z")


def matches_any(path: str, globs: tuple[str, ...]) -> bool:
    """True if the repository-relative POSIX `path` matches one of `globs`."""
    return any(_glob_regex(g).match(path) for g in globs)


def is_test_path(path: str, config: ExclusionConfig) -> bool:
    """True if `path` is test code by the configured globs (whatever the mode)."""
    return matches_any(path, config.test_globs)


def encoder_sees(path: str, config: ExclusionConfig) -> bool:
    """True if the encoder may read the file at `path` under `config`."""
    return config.mode == "with-tests" or not is_test_path(path, config)
