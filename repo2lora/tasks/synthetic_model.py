"""The in-memory model of a synthetic repository's package (modules, constants, functions,
classes, and the names and values they use, unique within one repository) and how one commit
changes it: add a feature, change a constant, rename an API. Everything is drawn from the
repository's seeded `random.Random`, in a fixed order, so the same seed gives the same package.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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


@dataclass
class Constant:
    name: str
    value: Value


@dataclass
class Function:
    name: str
    stem: str  # the name without its verb, also the registry key: renames change the verb
    template: FunctionTemplate
    constant: str
    params: tuple[int, ...]  # the arguments the tests call it with


@dataclass
class Class:
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
class Module:
    name: str
    topic: str
    import_style: Literal["module", "names"]
    constants: list[Constant] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    classes: list[Class] = field(default_factory=list)

    def constant(self, name: str) -> Constant:
        return next(c for c in self.constants if c.name == name)


@dataclass
class Package:
    name: str
    topic: str
    tagline: str
    error: str
    version: int
    modules: list[Module]


class Names:
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


def _new_value(template: FunctionTemplate | Literal["base", "class_label"], names: Names) -> Value:
    if template in ("label", "class_label"):
        return names.label()
    if template == "share":
        return names.weight()
    low, high = {"scale": (11, 97), "fold": (7, 31), "series": (3, 19), "base": (5, 60)}[template]
    return names.int_value(low, high)


def add_function(module: Module, names: Names) -> Function:
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
    module.constants.append(Constant(constant, _new_value(template, names)))
    params = {
        "scale": (rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 5)),
        "label": (rng.randint(2, 40),),
        "fold": (rng.randint(3, 40), rng.randint(3, 40), rng.randint(3, 40)),
        "series": (rng.randint(3, 4),),
        "share": (rng.randint(1, 7), rng.choice((2, 4, 8, 16))),
    }[template]
    name = names.claim(lambda: f"{names.verb()}_{stem}")
    function = Function(name, stem, template, constant, params)
    module.functions.append(function)
    return function


def add_class(module: Module, names: Names) -> Class:
    rng = names.rng
    noun = names.noun()
    name = names.claim(lambda: f"{noun.capitalize()}{rng.choice(_AGENTS)}")
    base = names.claim(lambda: f"DEFAULT_{noun.upper()}_{rng.choice(('BASE', 'START', 'FLOOR'))}")
    label = names.claim(lambda: f"{noun.upper()}_{rng.choice(('LABEL', 'BADGE', 'CAPTION'))}")
    module.constants.append(Constant(base, _new_value("base", names)))
    module.constants.append(Constant(label, _new_value("class_label", names)))
    item = rng.choice(("amount", "reading", "sample", "entry", "units", "delta", "charge"))
    cls = Class(
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


def add_module(package: Package, names: Names) -> Module:
    rng = names.rng
    name = names.claim(lambda: rng.choice(_MODULES))
    style: Literal["module", "names"] = rng.choice(("module", "names"))
    module = Module(name=name, topic=names.noun(), import_style=style)
    package.modules.append(module)
    return module


def initial_package(name: str, names: Names) -> Package:
    rng = names.rng
    topic = names.noun()
    error = names.claim(lambda: f"{names.noun().capitalize()}{names.noun().capitalize()}Error")
    package = Package(
        name=name,
        topic=topic,
        tagline=rng.choice(_TAGLINES).format(topic=topic),
        error=error,
        version=1,
        modules=[],
    )
    for index in range(2):
        module = add_module(package, names)
        add_function(module, names)
        add_function(module, names)
        if index == 0:
            add_class(module, names)
    return package


def package_name(rng: random.Random, taken: list[str]) -> str:
    while True:
        name = "".join(
            (rng.choice(_ONSETS), rng.choice(_VOWELS), rng.choice(_ONSETS), rng.choice(_VOWELS))
        ) + rng.choice(_CODAS)
        if name not in taken and name not in _SHADOWED_MODULES:
            return name


# --- evolution -------------------------------------------------------------------------------

EvolveKind = Literal["add_feature", "change_constant", "rename"]


def evolve(package: Package, names: Names, kind: EvolveKind) -> SyntheticChange:
    """Apply one change of `kind` to the model and say what it was."""
    rng = names.rng
    if kind == "add_feature":
        package.version += 1
        roll = rng.random()
        if roll < 0.2 and len(package.modules) < _MAX_MODULES:
            module = add_module(package, names)
            function = add_function(module, names)
            return SyntheticChange("add_feature", "function", module.name, new_name=function.name)
        module = rng.choice(package.modules)
        if roll < 0.4:
            cls = add_class(module, names)
            return SyntheticChange("add_feature", "class", module.name, new_name=cls.name)
        function = add_function(module, names)
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
