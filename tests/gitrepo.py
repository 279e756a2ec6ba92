"""Real git repositories made in a temporary directory, for tests (no mocks of git)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent-home-for-git",
}


class GitRepo:
    """A work tree with helpers to write files and commit them at fixed dates."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tick = 0
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        env = {**os.environ, **_ENV}
        date = f"2026-01-01T00:00:{self._tick:02d}+00:00"
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
        out = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=self.root,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def write(self, files: dict[str, str | bytes]) -> None:
        for rel, content in files.items():
            p = self.root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)

    def commit(self, files: dict[str, str | bytes] | None = None, message: str = "change") -> str:
        if files:
            self.write(files)
        self._tick += 1
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


SAMPLE_V1: dict[str, str | bytes] = {
    "pkg/__init__.py": '"""Sample package."""\nVERSION = "1.0"\n',
    "pkg/geometry.py": (
        "import math\n\nUNIT = 1.0\n\n\n"
        "def area_of_circle(radius):\n    return math.pi * radius ** 2\n\n\n"
        "class Vector:\n    dims = 2\n\n    def __init__(self, x, y):\n        self.x = x\n"
        "        self.y = y\n\n    def norm(self):\n        return math.hypot(self.x, self.y)\n"
    ),
    "tests/test_geometry.py": (
        "from pkg.geometry import area_of_circle\n\n\n"
        "def test_area():\n    assert area_of_circle(1) == 3.141592653589793\n"
    ),
    "README.md": "# sample\n",
}

SAMPLE_V2: dict[str, str | bytes] = {
    "pkg/shapes.py": (
        "from pkg.geometry import Vector\n\n\n"
        "class Polygon:\n    def __init__(self, points):\n        self.points = points\n\n"
        "    def perimeter(self):\n        return sum(p.norm() for p in self.points)\n"
    ),
}
