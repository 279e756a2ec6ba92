"""Renders a synthetic package model into the files of one commit: the package's source and
its tests, written from the same model so the tests always agree with the code and pass under
pytest."""

from __future__ import annotations

import json
from collections.abc import Callable

from repo2lora.tasks.synthetic_model import Class, Constant, Function, Module, Package, Value


def render_files(package: Package) -> dict[str, str]:
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


def _raises_errors(module: Module) -> bool:
    return bool(module.classes) or any(f.template in ("scale", "share") for f in module.functions)


def _render_module(package: Package, module: Module) -> str:
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


def _render_function(f: Function, error: str) -> str:
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


def _render_class(cls: Class, error: str) -> str:
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


def _render_tests(package: Package, module: Module) -> str:
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


def _constant_test(constant: Constant, ref: Callable[[str], str]) -> str:
    return (
        f"def test_{constant.name.lower()}_value() -> None:\n"
        f"    assert {ref(constant.name)} == {_literal(constant.value)}"
    )


def _function_tests(f: Function, value: Value, error: str, ref: Callable[[str], str]) -> list[str]:
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
    cls: Class, base: Value, label: Value, error: str, ref: Callable[[str], str]
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
