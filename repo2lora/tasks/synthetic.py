"""Generates the synthetic evolving-repository suite: small, real Python packages in real git
repositories, whose identifiers and constant values are specific to each repository and whose
histories add features, change constants and rename APIs (updating callers and tests).

Everything is a function of the seed: the same seed gives byte-identical files and identical
commit shas (fixed author, committer and dates; no global git config is read). A repository's
source and tests are rendered from an in-memory model of the package at every commit, so the
tests always agree with the code and pass under pytest. What each commit did is recorded in a
JSON manifest beside the repository directory (never inside it: it names the answers).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from repo_encoder.errors import UserError

ChangeKind = Literal["create", "add_feature", "change_constant", "rename"]
SymbolKind = Literal["package", "function", "class", "method", "constant"]
FunctionTemplate = Literal["scale", "label", "fold", "series", "share"]
Value = int | float | str

_VERBS = (
    "compute", "derive", "resolve", "estimate", "normalize", "encode", "merge", "score",
    "project", "balance", "collect", "render", "measure", "allocate", "reconcile", "forecast",
    "sample", "rotate", "stitch", "rank", "assemble", "gather", "weigh", "trace", "blend",
    "settle", "tally", "shape", "refine", "route",
)  # fmt: skip
_NOUNS = (
    "flux", "ratio", "budget", "quota", "span", "ledger", "beacon", "cipher", "orbit", "harbor",
    "lattice", "prism", "kernel", "cohort", "tariff", "parcel", "glyph", "ember", "canopy",
    "quorum", "relay", "sprocket", "tundra", "vertex", "mosaic", "cadence", "anchor", "pixel",
    "rivet", "marble", "falcon", "meadow", "cobalt", "saffron", "nimbus", "ripple", "summit",
    "fathom", "lantern", "mortar", "pylon", "quiver", "thistle", "basalt", "willow", "comet",
    "drift", "ferry", "garnet", "hollow", "jetty", "kiln", "lumen", "mirage", "nectar", "opal",
    "plume", "quarry", "raft", "sleet", "tinder", "umber", "vapor", "wicket", "zephyr", "retry",
)  # fmt: skip
_AGENTS = (
    "Meter", "Gauge", "Ledger", "Router", "Planner", "Tracker", "Buffer", "Registry",
    "Scheduler", "Keeper", "Builder", "Monitor", "Pool", "Index", "Cache", "Queue", "Broker",
)  # fmt: skip
_METHOD_VERBS = ("add", "record", "push", "absorb", "log", "feed", "apply", "credit", "stack")
_DESCRIBE_VERBS = ("describe", "summarize", "format", "report", "render", "explain", "show")
_LIMIT_WORDS = ("MAX", "MIN", "DEFAULT", "BASE", "PEAK", "SPARE", "TOTAL", "SOFT", "HARD")
_MODULES = (
    "ratios", "ledgers", "routing", "pricing", "scheduling", "metrics", "geometry", "storage",
    "tariffs", "inventory", "telemetry", "billing", "catalog", "survey", "weather", "traffic",
    "payroll", "harvest", "shipping", "forecasts", "signals", "archives", "dispatch", "rosters",
)  # fmt: skip
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "qu", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("x", "n", "l", "r", "s", "k", "m", "th")
_TAGLINES = (
    "small utilities for {topic} bookkeeping",
    "a toolkit for {topic} calculations",
    "helpers that keep {topic} records consistent",
    "tools for planning {topic} workloads",
)

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Synthetic Author",
    "GIT_AUTHOR_EMAIL": "author@synthetic.invalid",
    "GIT_COMMITTER_NAME": "Synthetic Author",
    "GIT_COMMITTER_EMAIL": "author@synthetic.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
_GIT_FLAGS = (
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.autocrlf=false",
    "-c",
    f"core.hooksPath={os.devnull}",
)
_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: commit dates are fixed so shas are reproducible
_MAX_MODULES = 5
# The names this alphabet can spell that are also standard-library or common modules: a package
# called `token` in the work tree would shadow the one the interpreter imports at start-up.
# A fixed list, not `sys.stdlib_module_names`, so the output does not depend on the Python version.
_SHADOWED_MODULES = frozenset({"pipes", "posix", "regex", "token"})


@dataclass(frozen=True)
class SyntheticChange:
    """One thing a commit did. Renames carry `old_name`/`new_name` (methods as `Class.method`),
    constant changes `old_value`/`new_value`, additions `new_name`."""

    kind: ChangeKind
    symbol: SymbolKind
    module: str
    old_name: str | None = None
    new_name: str | None = None
    old_value: Value | None = None
    new_value: Value | None = None

    def describe(self) -> str:
        """The commit-message line for this change."""
        if self.kind == "create":
            return f"Create {self.new_name}"
        if self.kind == "add_feature":
            return f"Add {self.symbol} {self.new_name} to {self.module}"
        if self.kind == "change_constant":
            return f"Change {self.new_name} in {self.module} from {self.old_value!r} to " + repr(
                self.new_value
            )
        return f"Rename {self.symbol} {self.old_name} to {self.new_name} in {self.module}"


@dataclass(frozen=True)
class SyntheticCommit:
    """A commit of a synthetic repository: its position in the history (0 is the first), sha,
    message and what it changed."""

    index: int
    sha: str
    message: str
    changes: tuple[SyntheticChange, ...]


@dataclass(frozen=True)
class SyntheticRepo:
    """A generated repository: its work tree `path`, the importable `package` inside it, the
    manifest beside it, and its commits oldest first."""

    name: str
    path: Path
    package: str
    manifest_path: Path
    commits: tuple[SyntheticCommit, ...]

    def changes(self, kind: ChangeKind) -> list[tuple[SyntheticCommit, SyntheticChange]]:
        """Every change of `kind` with the commit that made it, oldest first."""
        return [(c, ch) for c in self.commits for ch in c.changes if ch.kind == kind]


def generate_suite(root: Path, n_repos: int, n_commits: int, seed: int) -> list[SyntheticRepo]:
    """Create `n_repos` git repositories of `n_commits` commits each under `root` (as
    `root/<name>/`, with `root/<name>.manifest.json` beside each). Deterministic by `seed`."""
    if n_repos < 1 or n_commits < 1:
        raise UserError(
            f"asked for {n_repos} repositories of {n_commits} commits; ask for at least 1 of each"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    repos: list[SyntheticRepo] = []
    packages: list[str] = []
    for index in range(n_repos):
        rng = random.Random(f"repo2lora-synthetic/{seed}/{index}")
        package = _package_name(rng, packages)
        packages.append(package)
        name = f"synth{index:02d}-{package}"
        manifest = root / f"{name}.manifest.json"
        repos.append(_generate_repo(root / name, manifest, package, rng, n_commits))
    return repos


# --- the package model -----------------------------------------------------------------------


@dataclass
class _Constant:
    name: str
    value: Value


@dataclass
class _Function:
    name: str
    stem: str  # the name without its verb, also the registry key: renames change the verb
    template: FunctionTemplate
    constant: str
    params: tuple[int, ...]  # the arguments the tests call it with


@dataclass
class _Class:
    name: str
    noun: str
    var: str  # the name tests keep an instance under; tests rarely rename their variables
    base_constant: str
    label_constant: str
    add_method: str
    describe_method: str
    factory: str
    params: tuple[int, ...]


@dataclass
class _Module:
    name: str
    topic: str
    import_style: Literal["module", "names"]
    constants: list[_Constant] = field(default_factory=list)
    functions: list[_Function] = field(default_factory=list)
    classes: list[_Class] = field(default_factory=list)

    def constant(self, name: str) -> _Constant:
        return next(c for c in self.constants if c.name == name)


@dataclass
class _Package:
    name: str
    topic: str
    tagline: str
    error: str
    version: int
    modules: list[_Module]


class _Names:
    """Draws identifiers and values that are unique within one repository (a renamed name is
    never handed out again)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.values: list[Value] = []

    def claim(self, draw: Callable[[], str]) -> str:
        for _ in range(200):
            name = draw()
            if name not in self.used:
                break
        else:
            name = f"{name}_{len(self.used)}"
        self.used.add(name)
        return name

    def verb(self) -> str:
        return self.rng.choice(_VERBS)

    def noun(self) -> str:
        return self.rng.choice(_NOUNS)

    def stem(self) -> str:
        return self.claim(lambda: "_".join(self.rng.sample(_NOUNS, 2)))

    def value(self, draw: Callable[[], Value]) -> Value:
        for _ in range(200):
            value = draw()
            if value not in self.values:
                break
        self.values.append(value)
        return value

    def int_value(self, low: int, high: int) -> int:
        value = self.value(lambda: self.rng.randint(low, high))
        assert isinstance(value, int)
        return value

    def label(self) -> str:
        rng = self.rng
        value = self.value(lambda: rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS))
        assert isinstance(value, str)
        return value

    def weight(self) -> float:
        # Multiples of 1/4 times part/whole with whole a power of two: exact binary floats,
        # so expected values print short and compare exactly.
        value = self.value(lambda: self.rng.choice([k / 4 for k in range(3, 20) if k != 4]))
        assert isinstance(value, float)
        return value


_TEMPLATES: tuple[FunctionTemplate, ...] = ("scale", "label", "fold", "series", "share")


def _new_value(template: FunctionTemplate | Literal["base", "class_label"], names: _Names) -> Value:
    if template in ("label", "class_label"):
        return names.label()
    if template == "share":
        return names.weight()
    low, high = {"scale": (11, 97), "fold": (7, 31), "series": (3, 19), "base": (5, 60)}[template]
    return names.int_value(low, high)


def _add_function(module: _Module, names: _Names) -> _Function:
    rng = names.rng
    template = rng.choice(_TEMPLATES)
    suffixes = {
        "scale": ("BUDGET", "LIMIT", "FACTOR", "CEILING"),
        "label": ("PREFIX", "TAG", "MARK"),
        "fold": ("WINDOW", "MODULUS", "PERIOD"),
        "series": ("STEP", "STRIDE", "PITCH"),
        "share": ("WEIGHT", "BIAS", "SCALE"),
    }[template]
    stem = names.stem()
    # The constant is named after the function's first noun when that name is still free.
    noun = stem.split("_")[0].upper()
    limit = rng.choice(_LIMIT_WORDS) + "_" if template == "scale" else ""
    free = [f"{limit}{noun}_{s}" for s in suffixes if f"{limit}{noun}_{s}" not in names.used]
    if free:
        constant = names.claim(lambda: rng.choice(free))
    else:
        constant = names.claim(lambda: f"{limit}{names.noun().upper()}_{rng.choice(suffixes)}")
    module.constants.append(_Constant(constant, _new_value(template, names)))
    params = {
        "scale": (rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 5)),
        "label": (rng.randint(2, 40),),
        "fold": (rng.randint(3, 40), rng.randint(3, 40), rng.randint(3, 40)),
        "series": (rng.randint(3, 4),),
        "share": (rng.randint(1, 7), rng.choice((2, 4, 8, 16))),
    }[template]
    name = names.claim(lambda: f"{names.verb()}_{stem}")
    function = _Function(name, stem, template, constant, params)
    module.functions.append(function)
    return function


def _add_class(module: _Module, names: _Names) -> _Class:
    rng = names.rng
    noun = names.noun()
    name = names.claim(lambda: f"{noun.capitalize()}{rng.choice(_AGENTS)}")
    base = names.claim(lambda: f"DEFAULT_{noun.upper()}_{rng.choice(('BASE', 'START', 'FLOOR'))}")
    label = names.claim(lambda: f"{noun.upper()}_{rng.choice(('LABEL', 'BADGE', 'CAPTION'))}")
    module.constants.append(_Constant(base, _new_value("base", names)))
    module.constants.append(_Constant(label, _new_value("class_label", names)))
    item = rng.choice(("amount", "reading", "sample", "entry", "units", "delta", "charge"))
    cls = _Class(
        name=name,
        noun=noun,
        var=names.claim(lambda: f"{noun}_{name.removeprefix(noun.capitalize()).lower()}"),
        base_constant=base,
        label_constant=label,
        add_method=names.claim(lambda: f"{rng.choice(_METHOD_VERBS)}_{item}"),
        describe_method=names.claim(lambda: f"{rng.choice(_DESCRIBE_VERBS)}_{noun}"),
        factory=names.claim(lambda: f"{rng.choice(('open', 'make', 'new', 'start'))}_{noun}"),
        params=(rng.randint(2, 30), rng.randint(2, 30), rng.randint(61, 90)),
    )
    module.classes.append(cls)
    return cls


def _add_module(package: _Package, names: _Names) -> _Module:
    rng = names.rng
    name = names.claim(lambda: rng.choice(_MODULES))
    style: Literal["module", "names"] = rng.choice(("module", "names"))
    module = _Module(name=name, topic=names.noun(), import_style=style)
    package.modules.append(module)
    return module


def _initial_package(name: str, names: _Names) -> _Package:
    rng = names.rng
    topic = names.noun()
    error = names.claim(lambda: f"{names.noun().capitalize()}{names.noun().capitalize()}Error")
    package = _Package(
        name=name,
        topic=topic,
        tagline=rng.choice(_TAGLINES).format(topic=topic),
        error=error,
        version=1,
        modules=[],
    )
    for index in range(2):
        module = _add_module(package, names)
        _add_function(module, names)
        _add_function(module, names)
        if index == 0:
            _add_class(module, names)
    return package


# --- evolution -------------------------------------------------------------------------------

_EvolveKind = Literal["add_feature", "change_constant", "rename"]


def _evolve(package: _Package, names: _Names, kind: _EvolveKind) -> SyntheticChange:
    """Apply one change of `kind` to the model and say what it was."""
    rng = names.rng
    if kind == "add_feature":
        package.version += 1
        roll = rng.random()
        if roll < 0.2 and len(package.modules) < _MAX_MODULES:
            module = _add_module(package, names)
            function = _add_function(module, names)
            return SyntheticChange("add_feature", "function", module.name, new_name=function.name)
        module = rng.choice(package.modules)
        if roll < 0.4:
            cls = _add_class(module, names)
            return SyntheticChange("add_feature", "class", module.name, new_name=cls.name)
        function = _add_function(module, names)
        return SyntheticChange("add_feature", "function", module.name, new_name=function.name)

    if kind == "change_constant":
        module = rng.choice(package.modules)
        constant = rng.choice(module.constants)
        old = constant.value
        if isinstance(old, str):
            constant.value = names.label()
        elif isinstance(old, float):
            constant.value = names.weight()
        else:
            constant.value = names.int_value(max(3, old - 20), old + 20)
        return SyntheticChange(
            "change_constant",
            "constant",
            module.name,
            old_name=constant.name,
            new_name=constant.name,
            old_value=old,
            new_value=constant.value,
        )

    symbol = rng.choice(["function", "function", "class", "method", "error"])
    modules_with_classes = [m for m in package.modules if m.classes]
    if symbol == "error" or (symbol in ("class", "method") and not modules_with_classes):
        old_name = package.error
        package.error = names.claim(
            lambda: f"{names.noun().capitalize()}{names.noun().capitalize()}Error"
        )
        return SyntheticChange("rename", "class", "errors", old_name, package.error)
    if symbol == "function":
        module = rng.choice(package.modules)
        function = rng.choice(module.functions)
        old_name = function.name
        function.name = names.claim(lambda: f"{names.verb()}_{function.stem}")
        return SyntheticChange("rename", "function", module.name, old_name, function.name)
    module = rng.choice(modules_with_classes)
    cls = rng.choice(module.classes)
    if symbol == "class":
        old_name = cls.name
        cls.name = names.claim(lambda: f"{cls.noun.capitalize()}{rng.choice(_AGENTS)}")
        return SyntheticChange("rename", "class", module.name, old_name, cls.name)
    if rng.random() < 0.5:
        old_name = cls.add_method
        item = old_name.split("_", 1)[1]
        cls.add_method = names.claim(lambda: f"{rng.choice(_METHOD_VERBS)}_{item}")
        new_name = cls.add_method
    else:
        old_name = cls.describe_method
        cls.describe_method = names.claim(lambda: f"{rng.choice(_DESCRIBE_VERBS)}_{cls.noun}")
        new_name = cls.describe_method
    return SyntheticChange(
        "rename", "method", module.name, f"{cls.name}.{old_name}", f"{cls.name}.{new_name}"
    )


# --- rendering: the model -> the files of one commit -----------------------------------------


def _render(package: _Package) -> dict[str, str]:
    """Every file of the repository at the model's current state, by path."""
    pkg = package.name
    modules = ", ".join(f"`{m.name}`" for m in package.modules)
    files = {
        ".gitignore": "__pycache__/\n.pytest_cache/\n*.egg-info/\n",
        "README.md": (
            f"# {pkg}\n\n{pkg.capitalize()} is {package.tagline}.\n\n"
            f"Modules: {modules}.\n\nRun the tests with `python -m pytest`.\n"
        ),
        "pyproject.toml": (
            f'[project]\nname = "{pkg}"\nversion = "0.{package.version}.0"\n'
            f'description = "{package.tagline.capitalize()}"\nrequires-python = ">=3.9"\n\n'
            '[tool.pytest.ini_options]\ntestpaths = ["tests"]\npythonpath = ["."]\n'
        ),
        f"{pkg}/__init__.py": (
            f'"""{pkg.capitalize()}: {package.tagline}."""\n\n'
            f'__version__ = "0.{package.version}.0"\n'
        ),
        f"{pkg}/errors.py": (
            f'"""Errors raised by {pkg}."""\n\n\n'
            f"class {package.error}(ValueError):\n"
            f'    """Raised when an input to {pkg} is out of range."""\n'
        ),
    }
    for module in package.modules:
        files[f"{pkg}/{module.name}.py"] = _render_module(package, module)
        files[f"tests/test_{module.name}.py"] = _render_tests(package, module)
    return dict(sorted(files.items()))


def _literal(value: Value) -> str:
    """Python source for `value`, strings in double quotes as a formatter would write them."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _raises_errors(module: _Module) -> bool:
    return bool(module.classes) or any(f.template in ("scale", "share") for f in module.functions)


def _render_module(package: _Package, module: _Module) -> str:
    head = [f'"""{module.name.capitalize()} for {package.name}: {module.topic} helpers."""', ""]
    head.append("from __future__ import annotations")
    if _raises_errors(module):
        head += ["", f"from {package.name}.errors import {package.error}"]
    head.append("")
    head += [f"{c.name} = {_literal(c.value)}" for c in module.constants]
    blocks = [_render_function(f, package.error) for f in module.functions]
    blocks += [_render_class(c, package.error) for c in module.classes]
    if module.functions:
        entries = "".join(f'    "{f.stem}": {f.name},\n' for f in module.functions)
        blocks.append(f"HANDLERS = {{\n{entries}}}")
    return "\n".join(head) + "\n\n\n" + "\n\n\n".join(blocks) + "\n"


def _render_function(f: _Function, error: str) -> str:
    c = f.constant
    if f.template == "scale":
        return (
            f"def {f.name}(value: int) -> int:\n"
            f'    """Scale `value` by {c} and add {f.params[0]}; negative values are rejected."""\n'
            f"    if value < 0:\n"
            f'        raise {error}(f"value must be non-negative, got {{value}}")\n'
            f"    return value * {c} + {f.params[0]}"
        )
    if f.template == "label":
        return (
            f"def {f.name}(index: int) -> str:\n"
            f'    """The tag for `index`, prefixed with {c}."""\n'
            f'    return f"{{{c}}}-{{index}}"'
        )
    if f.template == "fold":
        return (
            f"def {f.name}(values: list[int]) -> int:\n"
            f'    """The sum of `values`, wrapped into the {c} window."""\n'
            f"    return sum(values) % {c}"
        )
    if f.template == "series":
        return (
            f"def {f.name}(count: int) -> list[int]:\n"
            f'    """The first `count` multiples of {c}."""\n'
            f"    return [{c} * i for i in range(count)]"
        )
    return (
        f"def {f.name}(part: int, whole: int) -> float:\n"
        f'    """The share `part / whole`, weighted by {c}."""\n'
        f"    if whole == 0:\n"
        f'        raise {error}("whole must not be zero")\n'
        f"    return part / whole * {c}"
    )


def _render_class(cls: _Class, error: str) -> str:
    return (
        f"class {cls.name}:\n"
        f'    """A running {cls.noun} total that starts at `base`."""\n\n'
        f"    def __init__(self, base: int = {cls.base_constant}) -> None:\n"
        f"        self.base = base\n"
        f"        self.total = base\n\n"
        f"    def {cls.add_method}(self, amount: int) -> int:\n"
        f'        """Add `amount` to the total and return the new total."""\n'
        f"        if amount < 0:\n"
        f'            raise {error}(f"amount must be non-negative, got {{amount}}")\n'
        f"        self.total += amount\n"
        f"        return self.total\n\n"
        f"    def {cls.describe_method}(self) -> str:\n"
        f'        """The total, labelled with {cls.label_constant}."""\n'
        f'        return f"{{{cls.label_constant}}}:{{self.total}}"\n\n'
        f"    def __str__(self) -> str:\n"
        f"        return self.{cls.describe_method}()\n\n\n"
        f"def {cls.factory}(base: int | None = None) -> {cls.name}:\n"
        f'    """A {cls.name} that starts at `base`, or at {cls.base_constant} when omitted."""\n'
        f"    return {cls.name}({cls.base_constant} if base is None else base)"
    )


def _render_tests(package: _Package, module: _Module) -> str:
    def ref(name: str) -> str:
        return f"{module.name}.{name}" if module.import_style == "module" else name

    error = package.error
    lines = [f'"""Tests for {package.name}.{module.name}."""', ""]
    if module.classes:
        lines += ["import unittest", ""]
    if _raises_errors(module):
        lines += ["import pytest", ""]
    if module.import_style == "module":
        lines.append(f"from {package.name} import {module.name}")
    else:
        imported = [c.name for c in module.constants]
        imported += [f.name for f in module.functions] + (["HANDLERS"] if module.functions else [])
        imported += [name for c in module.classes for name in (c.name, c.factory)]
        listed = "".join(f"    {name},\n" for name in sorted(imported))
        lines.append(f"from {package.name}.{module.name} import (\n{listed})")
    if _raises_errors(module):
        lines.append(f"from {package.name}.errors import {error}")

    blocks: list[str] = []
    for f in module.functions:
        blocks.append(_constant_test(module.constant(f.constant), ref))
        blocks += _function_tests(f, module.constant(f.constant).value, error, ref)
    for cls in module.classes:
        base = module.constant(cls.base_constant)
        label = module.constant(cls.label_constant)
        blocks += [_constant_test(base, ref), _constant_test(label, ref)]
        blocks += _class_tests(cls, base.value, label.value, error, ref)
    return "\n".join(lines) + "\n\n\n" + "\n\n\n".join(blocks) + "\n"


def _constant_test(constant: _Constant, ref: Callable[[str], str]) -> str:
    return (
        f"def test_{constant.name.lower()}_value() -> None:\n"
        f"    assert {ref(constant.name)} == {_literal(constant.value)}"
    )


def _function_tests(f: _Function, value: Value, error: str, ref: Callable[[str], str]) -> list[str]:
    call = ref(f.name)
    p = f.params
    tests: list[str] = []
    if f.template == "scale":
        assert isinstance(value, int)
        tests.append(
            f"def test_{f.name}_scales_value() -> None:\n"
            f"    assert {call}({p[1]}) == {p[1] * value + p[0]}"
        )
        tests.append(
            f"def test_{f.name}_rejects_negative() -> None:\n"
            f"    with pytest.raises({error}):\n"
            f"        {call}(-{p[2]})"
        )
    elif f.template == "label":
        tests.append(
            f"def test_{f.name}_tags_index() -> None:\n"
            f"    assert {call}({p[0]}) == {_literal(f'{value}-{p[0]}')}"
        )
    elif f.template == "fold":
        assert isinstance(value, int)
        tests.append(
            f"def test_{f.name}_wraps_sum() -> None:\n"
            f"    assert {call}([{p[0]}, {p[1]}, {p[2]}]) == {sum(p) % value}"
        )
    elif f.template == "series":
        assert isinstance(value, int)
        tests.append(
            f"def test_{f.name}_lists_multiples() -> None:\n"
            f"    assert {call}({p[0]}) == {[value * i for i in range(p[0])]!r}"
        )
    else:
        assert isinstance(value, float)
        tests.append(
            f"def test_{f.name}_weights_share() -> None:\n"
            f"    assert {call}({p[0]}, {p[1]}) == pytest.approx({p[0] / p[1] * value!r})"
        )
        tests.append(
            f"def test_{f.name}_rejects_empty_whole() -> None:\n"
            f"    with pytest.raises({error}):\n"
            f"        {call}(1, 0)"
        )
    tests.append(
        f"def test_{f.name}_is_registered() -> None:\n"
        f'    assert {ref("HANDLERS")}["{f.stem}"] is {call}'
    )
    return tests


def _class_tests(
    cls: _Class, base: Value, label: Value, error: str, ref: Callable[[str], str]
) -> list[str]:
    assert isinstance(base, int)
    a, b, start = cls.params
    var = cls.var
    fixture = f"@pytest.fixture\ndef {var}():\n    return {ref(cls.factory)}({start})"
    factory_tests = [
        f"def test_{cls.factory}_starts_at_given_base({var}) -> None:\n"
        f"    assert {var}.total == {start}",
        f"def test_{cls.factory}_builds_instance() -> None:\n"
        f"    assert type({ref(cls.factory)}()) is {ref(cls.name)}",
    ]
    unit = (
        f"class Test{cls.name}(unittest.TestCase):\n"
        f"    def setUp(self) -> None:\n"
        f"        self.{var} = {ref(cls.name)}()\n\n"
        f"    def test_default_base(self) -> None:\n"
        f"        self.assertEqual(self.{var}.base, {base})\n\n"
        f"    def test_{cls.add_method}(self) -> None:\n"
        f"        self.assertEqual(self.{var}.{cls.add_method}({a}), {base + a})\n\n"
        f"    def test_{cls.add_method}_rejects_negative(self) -> None:\n"
        f"        with self.assertRaises({error}):\n"
        f"            self.{var}.{cls.add_method}(-1)\n\n"
        f"    def test_{cls.describe_method}(self) -> None:\n"
        f"        self.{var}.{cls.add_method}({b})\n"
        f"        self.assertEqual(self.{var}.{cls.describe_method}(), "
        f"{_literal(f'{label}:{base + b}')})\n\n"
        f"    def test_str_uses_{cls.describe_method}(self) -> None:\n"
        f"        self.assertEqual(str(self.{var}), self.{var}.{cls.describe_method}())"
    )
    return [fixture, *factory_tests, unit]


# --- git: the edge where the model becomes commits -------------------------------------------


def _git(path: Path, *args: str, date: int | None = None) -> str:
    # Inherited GIT_* variables (a hook's GIT_DIR, say) would point git at another repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_GIT_IDENTITY)
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{date} +0000"
    try:
        result = subprocess.run(
            ["git", *_GIT_FLAGS, *args], cwd=path, env=env, capture_output=True, text=True
        )
    except FileNotFoundError:
        raise UserError(
            "git is not installed; install git to generate the synthetic suite"
        ) from None
    if result.returncode != 0:
        raise UserError(
            f"git {args[0]} failed in {path}: {result.stderr.strip()}; "
            "check that the directory is writable"
        )
    return result.stdout.strip()


def _write_tree(path: Path, previous: dict[str, str], files: dict[str, str]) -> None:
    for rel in previous.keys() - files.keys():
        (path / rel).unlink()
    for rel, text in files.items():
        if previous.get(rel) != text:
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))


def _package_name(rng: random.Random, taken: list[str]) -> str:
    while True:
        name = "".join(
            (rng.choice(_ONSETS), rng.choice(_VOWELS), rng.choice(_ONSETS), rng.choice(_VOWELS))
        ) + rng.choice(_CODAS)
        if name not in taken and name not in _SHADOWED_MODULES:
            return name


def _generate_repo(
    path: Path, manifest_path: Path, package_name: str, rng: random.Random, n_commits: int
) -> SyntheticRepo:
    if path.exists() and any(path.iterdir()):
        raise UserError(
            f"{path} already exists and is not empty; generate the suite into an empty directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q", "-b", "main")
    names = _Names(rng)
    names.used.add(package_name)
    package = _initial_package(package_name, names)
    # Every run of three commits has each kind of change once, so every repository with four
    # or more commits has a rename for the evolution track to follow.
    cycle: list[_EvolveKind] = rng.sample(["add_feature", "change_constant", "rename"], 3)

    commits: list[SyntheticCommit] = []
    written: dict[str, str] = {}
    for index in range(n_commits):
        if index == 0:
            changes: tuple[SyntheticChange, ...] = (
                SyntheticChange("create", "package", package_name, new_name=package_name),
            )
        else:
            kinds = [cycle[(index - 1) % 3]]
            if rng.random() < 0.3:
                kinds.append(rng.choice([kind for kind in cycle if kind != kinds[0]]))
            changes = tuple(_evolve(package, names, kind) for kind in kinds)
        files = _render(package)
        _write_tree(path, written, files)
        written = files
        lines = [change.describe() for change in changes]
        message = lines[0] + ("\n\n" + "\n".join(lines[1:]) if len(lines) > 1 else "")
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "--allow-empty", "-m", message, date=_EPOCH + index * 3600)
        sha = _git(path, "rev-parse", "HEAD")
        commits.append(SyntheticCommit(index, sha, message, changes))

    repo = SyntheticRepo(path.name, path, package_name, manifest_path, tuple(commits))
    manifest_path.write_bytes(_manifest_json(repo).encode("utf-8"))
    return repo


def _manifest_json(repo: SyntheticRepo) -> str:
    manifest = {
        "name": repo.name,
        "package": repo.package,
        "path": repo.path.name,
        "commits": [
            {
                "index": c.index,
                "sha": c.sha,
                "message": c.message,
                "changes": [dataclasses.asdict(ch) for ch in c.changes],
            }
            for c in repo.commits
        ],
    }
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def load_repo(manifest_path: Path) -> SyntheticRepo:
    """The `SyntheticRepo` a manifest written by `generate_suite` describes (for a run that
    resumes over a suite generated earlier)."""
    manifest_path = Path(manifest_path)
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    commits = tuple(
        SyntheticCommit(
            c["index"], c["sha"], c["message"], tuple(SyntheticChange(**ch) for ch in c["changes"])
        )
        for c in data["commits"]
    )
    return SyntheticRepo(
        data["name"], manifest_path.parent / data["path"], data["package"], manifest_path, commits
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m repo2lora.tasks.synthetic OUT --repos N --commits M --seed S`: write a suite."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m repo2lora.tasks.synthetic",
        description="Generate a deterministic synthetic suite of evolving Python repositories.",
    )
    p.add_argument("out", type=Path)
    p.add_argument("--repos", type=int, default=8)
    p.add_argument("--commits", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        repos = generate_suite(args.out, args.repos, args.commits, args.seed)
    except UserError as exc:
        print(f"synthetic: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([str(r.path) for r in repos], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
