"""Arguments several commands share: the base model and hypernetwork, JSON output, target
modules, and the generator kinds `--generator` offers."""

from __future__ import annotations

import argparse

from repo_encoder.errors import UserError

# the generator kinds (`hypernet.checkpoint.KINDS`), written out so that building the parser
# imports no torch; the last two keep no stored state (`STATELESS_KINDS`)
OTHER_GENERATORS = ("shine", "dnd")
GENERATORS = ["code2lora-static", "code2lora-evo", "code2lora-names", *OTHER_GENERATORS]
HYPERNET_HELP = (
    "hypernetwork checkpoint directory; default: the trained code2lora-evo hypernetwork "
    "shipped with the embedded default model (for another --model, train one with "
    "`repo2lora train`)"
)


def _target_modules(text: str) -> tuple[str, ...]:
    from repo2lora.adapters.targets import parse_target_modules

    try:
        return parse_target_modules(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def target_modules_arg(sp: argparse.ArgumentParser, what: str) -> None:
    sp.add_argument(
        "--target-modules",
        type=_target_modules,
        metavar="attention|all-linear|NAME,...",
        help=f"which projections {what}: attention (query and value, or the fused QKV "
        "projection), all-linear, or module names (q_proj,v_proj); default: "
        "attention, or what --hypernet was trained for",
    )


def model_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--model",
        help="base model: a local transformers directory, a hub id, or a preset "
        "(tiny-random); default: the embedded default model",
    )
    sp.add_argument("--hypernet", help=HYPERNET_HELP)
    sp.add_argument("--json", action="store_true", help="print one JSON object for scripts")
