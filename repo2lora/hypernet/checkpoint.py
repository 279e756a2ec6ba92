"""Saves and loads hypernetwork checkpoints (safetensors + a JSON card that records the base
model the hypernetwork was trained for), and builds the untrained default for a base model."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar, overload

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from repo2lora.adapters.targets import (
    DEFAULT_TARGETS,
    choose_target_modules,
    output_head,
    select_targets,
    weightless_model,
)
from repo2lora.hypernet.dnd import DndConfig, DndGenerator
from repo2lora.hypernet.evo import EvoHypernet
from repo2lora.hypernet.names import NamesHypernet
from repo2lora.hypernet.protocol import Generator
from repo2lora.hypernet.shine import ShineConfig, ShineGenerator
from repo2lora.hypernet.static import HypernetConfig, StaticHypernet
from repo2lora.models import embedded
from repo2lora.models.loading import BaseModelInfo, describe_base_model
from repo_encoder.errors import UserError

WEIGHTS = "hypernet.safetensors"
CARD = "hypernet.json"
FORMAT = "repo2lora-hypernet"
FORMAT_VERSION = 1

GeneratorConfig = HypernetConfig | ShineConfig | DndConfig
BuiltGenerator = StaticHypernet | ShineGenerator | DndGenerator
# every kind by its name (`--generator`, the checkpoint card's `generator`)
KINDS: dict[str, type[BuiltGenerator]] = {
    cls.generator_name: cls
    for cls in (StaticHypernet, EvoHypernet, NamesHypernet, ShineGenerator, DndGenerator)
}
# kinds that make one adapter per snapshot and keep no stored state (SHINE, DnD)
STATELESS_KINDS: tuple[str, ...] = tuple(k for k, c in KINDS.items() if not c.stores_state)
# generators whose input is not a chunk-vector state: a card names them by `generator`
_OTHER_CONFIGS: dict[str, type[ShineConfig] | type[DndConfig]] = {
    ShineGenerator.generator_name: ShineConfig,
    DndGenerator.generator_name: DndConfig,
}


G = TypeVar("G", bound=Generator)


@dataclass
class LoadedGenerator(Generic[G]):
    """A loaded generator checkpoint (`load_generator`)."""

    net: G
    key: str  # identifies these exact weights: the state and adapter cache key
    description: str
    untrained: bool
    # how `update` follows history with it: by its static state at every commit (True), by its
    # evolving state (False), or as its kind says (None: the evolving state when it has a GRU)
    follows_static: bool | None = None


# the vector-state kind that snapshot, update and serve drive (`load_hypernet`)
LoadedHypernet = LoadedGenerator[StaticHypernet]


def default_hypernet_config(
    base: BaseModelInfo, target_modules: Sequence[str] = DEFAULT_TARGETS
) -> HypernetConfig:
    """The untrained default's settings for `base`, with the module types `target_modules`
    resolves to."""
    names = choose_target_modules(weightless_model(base.config), target_modules)
    return HypernetConfig(input_dim=int(base.config.hidden_size), target_modules=names)


def check_targets(
    recorded: Sequence[str], base: BaseModelInfo, wanted: Sequence[str] | None, what: str
) -> None:
    """A generator trained for the module types `recorded` is used with `--target-modules
    wanted` (None: whatever it was trained for): a UserError unless they resolve the same."""
    if wanted is None:
        return
    names = choose_target_modules(weightless_model(base.config), wanted)
    if names != tuple(sorted(recorded)):
        raise UserError(
            f"{what} was trained for target modules {','.join(sorted(recorded))}, but "
            f"--target-modules {','.join(wanted)} means {','.join(names)} for this model; "
            "drop --target-modules or pass a hypernetwork trained for those"
        )


@overload
def build_hypernet(cfg: HypernetConfig, base: BaseModelInfo) -> StaticHypernet: ...
@overload
def build_hypernet(cfg: ShineConfig, base: BaseModelInfo) -> ShineGenerator: ...
@overload
def build_hypernet(cfg: DndConfig, base: BaseModelInfo) -> DndGenerator: ...
def build_hypernet(cfg: GeneratorConfig, base: BaseModelInfo) -> BuiltGenerator:
    """The generator `cfg.generator` names, for the projections of `base` that
    `cfg.target_modules` chooses; the built generator's config records their module types."""
    skeleton = weightless_model(base.config)
    targets = select_targets(skeleton, cfg.target_modules)
    cfg = replace(cfg, target_modules=tuple(sorted({t.module_type for t in targets})))
    net: BuiltGenerator
    if isinstance(cfg, ShineConfig):
        net = ShineGenerator(cfg, targets)
    elif isinstance(cfg, DndConfig):
        net = DndGenerator(cfg, targets)
    elif cfg.generator == NamesHypernet.generator_name:
        net = NamesHypernet(cfg, targets, output_head(skeleton))
    else:
        cls = EvoHypernet if cfg.generator == EvoHypernet.generator_name else StaticHypernet
        net = cls(cfg, targets)
    net.eval()
    return net


def save_hypernet(
    net: Generator, base: BaseModelInfo, out_dir: str | os.PathLike[str], **card: object
) -> Path:
    """Write `hypernet.safetensors` and `hypernet.json` into `out_dir` (each atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(prefix=".hypernet.", dir=out)[1])
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out / WEIGHTS)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": net.generator_name,
        "config": net.cfg.to_json(),
        "base_model": {
            "identity": base.identity,
            "model_key": base.model_key,
            "description": base.description,
        },
        "sha256": embedded.file_sha256(out / WEIGHTS),
        **card,
    }
    tmp_card = out / f".{CARD}.tmp"
    tmp_card.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_card, out / CARD)
    return out


def load_hypernet(
    spec: str | None,
    base: BaseModelInfo,
    target_modules: Sequence[str] | None = None,
    generator: str | None = None,
) -> LoadedHypernet:
    """The hypernetwork named by `--hypernet`: None is the default for `base` (the shipped one,
    else the untrained one, seeded, so the same every run; for the module types
    `target_modules` chooses; `generator="code2lora-names"`: an untrained names generator); a
    directory is a checkpoint, refused if it was trained for another base model or other target
    modules, or holds a generator whose input is not a chunk-vector state."""
    names = generator == NamesHypernet.generator_name
    if spec is None and names:
        cfg = replace(
            default_hypernet_config(base, target_modules or DEFAULT_TARGETS),
            generator="code2lora-names",
        )
        digest = hashlib.sha256((cfg.digest() + base.identity).encode()).hexdigest()[:12]
        return LoadedHypernet(
            net=build_hypernet(cfg, base),
            key=f"untrained-names-{digest}",
            description="UNTRAINED code2lora-names hypernetwork (seeded init): its adapter "
            "leaves the model as it is",
            untrained=True,
        )
    if spec is None and (shipped := shipped_hypernet_dir(base, "code2lora-evo")) is not None:
        loaded = load_generator(str(shipped), base, target_modules, "the embedded default")
        assert isinstance(loaded.net, StaticHypernet)
        return LoadedHypernet(
            loaded.net, loaded.key, "embedded default code2lora-evo hypernetwork", False
        )
    if spec is None:
        cfg = default_hypernet_config(base, target_modules or DEFAULT_TARGETS)
        digest = hashlib.sha256((cfg.digest() + base.identity).encode()).hexdigest()[:12]
        return LoadedHypernet(
            net=build_hypernet(cfg, base),
            key=f"untrained-{digest}",
            description=(
                "UNTRAINED hypernetwork (seeded init): its adapter barely changes the model"
            ),
            untrained=True,
        )
    loaded = load_generator(spec, base, target_modules)
    if not isinstance(loaded.net, StaticHypernet):
        name = loaded.net.generator_name
        raise UserError(
            f"{spec} is a {name} generator, which has no evolving state to follow history "
            f"with; make its adapters with `repo2lora snapshot --hypernet {spec}`"
        )
    return LoadedHypernet(loaded.net, loaded.key, loaded.description, loaded.untrained)


def shipped_hypernet_dir(base: BaseModelInfo, generator: str) -> Path | None:
    """The embedded default's checkpoint of `generator`, when `base` is the embedded default
    base model (its files were verified when it was resolved)."""
    if base.model_dir is None or base.model_dir.resolve() != embedded.DEFAULT_DIR.resolve():
        return None
    rel = embedded.HYPERNETS.get(generator)
    d = embedded.DEFAULT_DIR / rel if rel is not None else None
    return d if d is not None and (d / CARD).is_file() else None


def load_history_hypernet(
    spec: str | None, base: BaseModelInfo, target_modules: Sequence[str] | None = None
) -> LoadedHypernet:
    """The hypernetwork that follows a repository's history (`update`, the server, `complete`)
    when `--hypernet` is `spec`: that checkpoint (followed as its kind says); else, for the
    embedded default base model, the shipped network its card's `update_follows` names, with
    the state it is followed by (the one that scored best after renames: today the evolving
    network's snapshot state at every commit, moved exactly by each diff); else the default
    `load_hypernet` picks."""
    if spec is not None or shipped_hypernet_dir(base, "code2lora-evo") is None:
        return load_hypernet(spec, base, target_modules)
    generator, state = embedded.update_follows()
    shipped = shipped_hypernet_dir(base, generator)
    if shipped is None:
        return load_hypernet(None, base, target_modules)
    loaded = load_hypernet(str(shipped), base, target_modules)
    return LoadedHypernet(
        loaded.net,
        loaded.key,
        f"embedded default {generator} hypernetwork",
        False,
        state == "static",
    )


def check_generator_kind(spec: str, wanted: str) -> None:
    """`--hypernet spec` with `--generator wanted`: a UserError unless the checkpoint holds that
    kind (code2lora-static and -evo checkpoints stand in for each other)."""
    found = card_generator(spec)
    same_family = {found, wanted} <= {"code2lora-static", "code2lora-evo"}
    if found is not None and found != wanted and not same_family:
        raise UserError(
            f"{spec} holds a {found} generator, not {wanted}; drop --generator or pass a "
            f"{wanted} checkpoint"
        )


def keeps_state(generator: str | None, hypernet: str | None) -> bool:
    """Whether `--generator` / the `--hypernet` checkpoint name a kind whose snapshot is a
    stored state (code2lora), rather than one adapter per snapshot (SHINE, DnD)."""
    if generator in STATELESS_KINDS:
        return False
    return not (hypernet and card_generator(hypernet) in STATELESS_KINDS)


def snapshot_hypernet(model: str | None, hypernet: str | None, generator: str | None) -> str | None:
    """The checkpoint `repo2lora snapshot` uses for a stored-state kind: `--hypernet` (checked
    against `--generator`), else for code2lora-static the shipped one when the base model is
    the embedded default (None: the default `load_hypernet` picks)."""
    if generator is not None and hypernet:
        check_generator_kind(hypernet, generator)
    if generator == "code2lora-static" and not hypernet:
        shipped = shipped_hypernet_dir(describe_base_model(model), "code2lora-static")
        return str(shipped) if shipped is not None else None
    return hypernet


def card_generator(spec: str) -> str | None:
    """The generator a checkpoint's card names (None when there is no readable card: the
    loader then says what is wrong)."""
    try:
        meta = json.loads((Path(spec).expanduser() / CARD).read_text())
    except (OSError, ValueError):
        return None
    return str(meta.get("generator")) if isinstance(meta, dict) else None


def load_generator(
    spec: str,
    base: BaseModelInfo,
    target_modules: Sequence[str] | None = None,
    name: str | None = None,
) -> LoadedGenerator[Generator]:
    """Any generator's checkpoint directory (code2lora-static/-evo, shine, dnd), refused if it
    was trained for another base model, or for other module types than `target_modules`
    chooses (None: the ones it was trained for)."""
    d = Path(spec).expanduser()
    if not (d / CARD).is_file() or not (d / WEIGHTS).is_file():
        raise UserError(
            f"hypernetwork checkpoint not found: {spec} needs {CARD} and {WEIGHTS}; "
            "pass a directory written by `repo2lora train`"
        )
    try:
        meta = json.loads((d / CARD).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {d / CARD}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{d / CARD} is not a repo2lora hypernetwork card")
    trained_for = meta.get("base_model", {}).get("identity")
    if trained_for != base.identity:
        raise UserError(
            f"hypernetwork {spec} was trained for base model {trained_for} "
            f"({meta.get('base_model', {}).get('description', '?')}), but the loaded base model "
            f"is {base.identity} ({base.spec}); pass the matching --model or train one for it"
        )
    sha = embedded.file_sha256(d / WEIGHTS)
    if meta.get("sha256") and meta["sha256"] != sha:
        raise UserError(f"{d / WEIGHTS} does not match the sha256 in its card; it is damaged")
    other = _OTHER_CONFIGS.get(str(meta.get("generator")))
    cfg = (other or HypernetConfig).from_json(meta["config"])
    if cfg.input_dim != int(base.config.hidden_size):
        cfg = replace(cfg, input_dim=int(base.config.hidden_size))
    check_targets(cfg.target_modules, base, target_modules, name or f"hypernetwork {spec}")
    net = build_hypernet(cfg, base)
    try:
        net.load_state_dict(load_file(str(d / WEIGHTS)), strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise UserError(f"cannot load {d / WEIGHTS}: {exc}") from None
    return LoadedGenerator(
        net=net, key=f"ckpt-{sha[:12]}", description=f"hypernetwork {d}", untrained=False
    )
