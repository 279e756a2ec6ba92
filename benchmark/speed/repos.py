"""The repositories the speed benchmarks time: seeded, syntactically valid Python packages that
look ordinary (`generate_repository`, of a given size), and histories of small commits on top
of them (`generate_history`: modify, add and delete functions, add and rename modules). Git
identity and dates are fixed and global git config is ignored, so a seed gives the same shas."""

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

SEED = 1234
# the identity generate_repository commits with; generate_history keeps it
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}

WORDS = (
    "account", "batch", "buffer", "cache", "channel", "client", "config", "cursor", "delta",
    "digest", "event", "field", "filter", "frame", "graph", "handle", "index", "item", "job",
    "ledger", "limit", "match", "metric", "node", "offset", "order", "packet", "page", "parser",
    "payload", "policy", "queue", "record", "region", "report", "request", "route", "sample",
    "schema", "score", "session", "shard", "signal", "source", "span", "stage", "token", "topic",
    "tracker", "user", "value", "vector", "window", "worker",
)  # fmt: skip
TYPES = ("int", "str", "float", "list[int]", "dict[str, int]", "bytes")
FUNC_DECORATORS = ("functools.lru_cache(maxsize=128)", "functools.cache", "staticmethod")


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(4, 9))).capitalize()


def _camel(rng: random.Random) -> str:
    return "".join(w.capitalize() for w in rng.sample(WORDS, 2))


def _statements(rng: random.Random, pad: str, names: list[str], budget: int) -> list[str]:
    """About `budget` lines of loops, conditionals, formatting and error handling."""
    out: list[str] = []
    while len(out) < budget:
        old, new, n = rng.choice(names), f"{rng.choice(WORDS)}_{len(out)}", rng.randint(2, 99)
        kind = rng.randrange(6)
        if kind == 0:
            out.append(f"{pad}{new} = {old} * {n} + len(str({rng.choice(names)}))")
        elif kind == 1:
            out += [
                f"{pad}{new} = []",
                f"{pad}for {new}_item in {old}:",
                f"{pad}    if {new}_item > {n}:",
                f"{pad}        {new}.append({new}_item - {n})",
                f"{pad}    elif {new}_item == {n // 2}:",
                f"{pad}        continue",
                f"{pad}    else:",
                f"{pad}        {new}.append({new}_item)",
            ]
        elif kind == 2:
            word = rng.choice(WORDS)
            out += [
                f'{pad}{new} = f"{word} {{{old}!r}} at {{{rng.choice(names)}}} ({n}%)"',
                f'{pad}logger.debug("%s: %s", {word.upper()!r}, {new})',
            ]
        elif kind == 3:
            out.append(f"{pad}{new} = {{k: v for k, v in {old}.items() if v > {n}}}")
        elif kind == 4:
            out += [
                f"{pad}try:",
                f"{pad}    {new} = int({old}) // {n}",
                f"{pad}except (TypeError, ValueError) as exc:",
                f'{pad}    raise ValueError(f"bad {old}: {{exc}}") from exc',
            ]
        else:
            out += [f"{pad}while {old} > {n}:", f"{pad}    {old} -= {rng.randint(1, 9)}"]
            continue  # defines no new name
        names.append(new)
    return out


def _function(rng: random.Random, pad: str, name: str, method: bool) -> list[str]:
    params = rng.sample(WORDS, rng.randint(1, 3))
    lines = []
    choices = FUNC_DECORATORS if method else FUNC_DECORATORS[:-1]  # staticmethod: methods only
    decorator = rng.choice(choices) if rng.random() < 0.25 else None
    if decorator is not None:
        lines.append(f"{pad}@{decorator}")
    self_ = ["self"] if method and decorator != "staticmethod" else []
    args = ", ".join(self_ + [f"{p}: {rng.choice(TYPES)}" for p in params])
    lines.append(f"{pad}def {name}({args}) -> {rng.choice(TYPES)}:")
    lines.append(f'{pad}    """{_sentence(rng)}."""')
    lines += _statements(rng, pad + "    ", list(params), rng.choice((3, 6, 10, 18, 30)))
    lines.append(f"{pad}    return {rng.choice(params)}")
    return lines


def _class(rng: random.Random, name: str) -> list[str]:
    fields = rng.sample(WORDS, rng.randint(2, 4))
    if rng.random() < 0.4:
        lines = ["@dataclasses.dataclass", f"class {name}:", f'    """{_sentence(rng)}."""', ""]
        lines += [f"    {f}: {rng.choice(TYPES)} = {rng.randint(0, 9)}" for f in fields]
    else:
        args = ", ".join(f"{f}: int" for f in fields)
        lines = [f"class {name}:", f'    """{_sentence(rng)}."""', ""]
        lines += [f"    def __init__(self, {args}) -> None:"]
        lines += [f"        self.{f} = {f}" for f in fields]
    for _ in range(rng.randint(3, 6)):
        lines += ["", *_function(rng, "    ", f"{rng.choice(WORDS)}_{rng.choice(WORDS)}", True)]
    return lines


def _module(rng: random.Random, module: str, earlier: list[tuple[str, str]]) -> str:
    """One module of 150-400 lines that imports a few names from modules written before it."""
    lines = [f'"""{_sentence(rng)}."""', "", "from __future__ import annotations", ""]
    lines += ["import dataclasses", "import functools", "import logging", ""]
    lines += [
        f"from {mod} import {name}" for mod, name in rng.sample(earlier, min(3, len(earlier)))
    ]
    lines += ["", "logger = logging.getLogger(__name__)", ""]
    for word in rng.sample(WORDS, rng.randint(2, 5)):
        lines.append(f"{word.upper()}_LIMIT = {rng.randint(1, 4096)}")
    target, defined = rng.randint(150, 400), []
    while len(lines) < target - 20:
        if rng.random() < 0.35:
            name = _camel(rng)
            body = _class(rng, name)
        else:
            name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{len(lines)}"
            body = _function(rng, "", name, False)
        lines += ["", "", *body]
        defined.append(name)
    earlier += [(module, name) for name in rng.sample(defined, min(2, len(defined)))]
    return "\n".join(lines) + "\n"


def generate_repository(root: Path, target_lines: int, seed: int = SEED) -> None:
    """Write a package of modules under `root` until it holds `target_lines` lines of Python,
    and commit it (git identity and dates fixed, global git config ignored)."""
    rng = random.Random(seed)
    earlier: list[tuple[str, str]] = []
    total, sub = 0, root
    while total < target_lines:
        if sub == root or len(list(sub.iterdir())) > 12:  # a new subpackage every dozen modules
            sub = root / "src" / "acme" / f"{rng.choice(WORDS)}_{total // 1000}"
            sub.mkdir(parents=True)
            (sub / "__init__.py").write_text(f'"""{_sentence(rng)}."""\n')
            total += 1
        name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"
        while (sub / f"{name}.py").exists():
            name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"
        module = f"acme.{sub.name}.{name}"
        text = _module(rng, module, earlier)
        (sub / f"{name}.py").write_text(text)
        total += text.count("\n")
    (root / "README.md").write_text("# acme\n\nGenerated for a benchmark.\n")
    env = {
        **os.environ,
        **GIT_ENV,
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    }
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "generate"]):
        subprocess.run(["git", *cmd], cwd=root, env=env, check=True)


# --- history: seeded edits of the kind ordinary commits make, one git commit each -----------

DEF_RE = re.compile(r"^( {0,4})def (\w+)\((.*)\)")
INT_RE = re.compile(r"\b\d+\b")
BASE_DATE = 1_704_067_200  # 2024-01-01T00:00:00Z, generate_repository's commit date
EDITS = ("modify", "add", "delete", "module", "rename")
EDIT_WEIGHTS = (58, 18, 12, 10, 2)


def _defs(lines: list[str]) -> list[tuple[int, int, int, list[str]]]:
    """(first line incl. decorators, end line exclusive, body indent, parameter names) of every
    top-level function and method."""
    out = []
    for i, line in enumerate(lines):
        m = DEF_RE.match(line)
        if m is None:
            continue
        indent = len(m.group(1))
        start = i
        while start > 0 and lines[start - 1].startswith(" " * indent + "@"):
            start -= 1
        end = i + 1
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():  # trailing blank lines stay outside
            end -= 1
        params = re.findall(r"(\w+):", m.group(3)) or ["value"]
        out.append((start, end, indent + 4, params))
    return out


def _modify_function(rng: random.Random, lines: list[str]) -> bool:
    """New statements before one function's `return`, and one of its numbers changed."""
    defs = _defs(lines)
    if not defs:
        return False
    start, end, body, params = rng.choice(defs)
    for j in range(start, end):
        if INT_RE.search(lines[j]) and not lines[j].lstrip().startswith(("def ", "@")):
            lines[j] = INT_RE.sub(str(rng.randint(2, 999)), lines[j], count=1)
            break
    ret = end - 1  # every generated function ends in `return <param>`
    new = _statements_for(rng, " " * body, params, rng.randint(1, 4))
    lines[ret:ret] = new
    return True


def _statements_for(rng: random.Random, pad: str, params: list[str], n: int) -> list[str]:
    word = rng.choice(WORDS)
    out = []
    for k in range(n):
        name = f"{word}_{rng.randint(0, 9999)}_{k}"
        out.append(f"{pad}{name} = {rng.choice(params)} * {rng.randint(2, 99)} + {k}")
    return out


def _add_function(rng: random.Random, lines: list[str], tag: str) -> bool:
    name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{tag}"
    while lines and not lines[-1].strip():
        lines.pop()
    lines += ["", "", *_function(rng, "", name, False)]
    return True


def _delete_function(rng: random.Random, lines: list[str]) -> bool:
    defs = [d for d in _defs(lines) if not lines[d[0]].lstrip().startswith("def __init__")]
    if len(defs) < 4:  # keep every module (and class) with a body
        return False
    start, end, _, _ = rng.choice(defs)
    while start > 0 and not lines[start - 1].strip():  # the blank lines before it go too
        start -= 1
    del lines[start:end]
    return True


def _small_module(rng: random.Random, tag: str) -> str:
    lines = [f'"""{_sentence(rng)}."""', "", "from __future__ import annotations", ""]
    lines += ["import functools", "import logging", "", "logger = logging.getLogger(__name__)"]
    for k in range(rng.randint(1, 3)):
        lines += ["", "", *_function(rng, "", f"{rng.choice(WORDS)}_{tag}_{k}", False)]
    return "\n".join(lines) + "\n"


def _fresh_name(rng: random.Random, folder: Path, tag: str) -> Path:
    path = folder / f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{tag}.py"
    while path.exists():
        path = folder / f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{tag}_{rng.randint(0, 999)}.py"
    return path


def _git(root: Path, *args: str, date: str) -> None:
    env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    subprocess.run(["git", *args], cwd=root, env=env, check=True)


def generate_history(root: Path, commits: int, seed: int) -> dict[str, int]:
    """Add `commits` commits to the repository at `root`, each touching 1-5 modules (modify a
    function, add one, delete one, add a small module, rename a module); the count of each
    edit made."""
    rng = random.Random(seed)
    modules = sorted(p for p in (root / "src").rglob("*.py") if p.name != "__init__.py")
    made = dict.fromkeys(EDITS, 0)
    for c in range(commits):
        tag = f"c{c}"
        for path in rng.sample(modules, min(len(modules), rng.randint(1, 5))):
            edit = rng.choices(EDITS, EDIT_WEIGHTS)[0]
            if edit == "module":
                new = _fresh_name(rng, path.parent, tag)
                new.write_text(_small_module(rng, tag))
                modules.append(new)
            elif edit == "rename":
                new = _fresh_name(rng, path.parent, tag)
                path.rename(new)
                modules[modules.index(path)] = new
            else:
                lines = path.read_text().split("\n")[:-1]
                if edit == "modify":
                    changed = _modify_function(rng, lines)
                elif edit == "add":
                    changed = _add_function(rng, lines, tag)
                else:
                    changed = _delete_function(rng, lines)
                if not changed:
                    edit = "modify"
                    _modify_function(rng, lines)
                path.write_text("\n".join(lines) + "\n")
            made[edit] += 1
        date = f"{BASE_DATE + 3600 * (c + 1)} +0000"  # one commit an hour
        _git(root, "add", "-A", date=date)
        _git(root, "commit", "-q", "-m", f"commit {c}: {_sentence(rng).lower()}", date=date)
    return made
