"""`repo2lora models`: the embedded default (checked against its sha256s) and the presets."""

from __future__ import annotations

import argparse

from repo2lora.cli.output import print_json


def cmd_models(args: argparse.Namespace) -> int:
    from repo2lora.models import embedded
    from repo2lora.models.presets import PRESETS

    default = embedded.describe_installed()
    presets = [
        {"name": name, "description": p.description, "untrained": True}
        for name, p in PRESETS.items()
    ]
    if args.json:
        print_json({"default": default, "presets": presets})
        return 0 if default.get("verified", True) else 1
    if not default["installed"]:
        print("default   not installed: commands without --model use the random placeholder")
    else:
        model = default["model"]
        state = "verified (sha256)" if default["verified"] else f"DAMAGED: {default['error']}"
        mb = (default.get("total_bytes") or 0) / 1e6
        print(f"default   {default['path']}  ({mb:.1f} MB, {state})")
        print(
            f"  model     {model.get('architecture', '?')}, {model.get('params', 0) / 1e6:.1f}M "
            f"parameters, vocabulary {model.get('vocab_size', '?')}, "
            f"{model.get('tokens_seen', 0) / 1e6:.1f}M tokens seen, held-out "
            + (
                f"{model['held_out_bits_per_byte']:.3f} bits per byte"
                if model.get("held_out_bits_per_byte")
                else f"loss {model.get('held_out_loss', float('nan')):.3f} nats/token"
            )
        )
        for name, h in sorted(default["hypernets"].items()):
            print(
                f"  {name:<9} {h.get('path', '?')}: {h.get('steps', '?')} steps on "
                f"{h.get('train_examples', '?')} tasks of {h.get('repositories', '?')} "
                "repositories"
            )
        follows = default.get("update_follows") or {}
        if follows:
            how = "static state at every commit" if follows.get("state") == "static" else "GRU"
            ev = follows.get("evidence") or {}
            scored = ", ".join(
                f"{m} {r['strict_em']:.3f}" for m, r in (ev.get("rows") or {}).items()
            )
            why = f" (strict EM after renames, n={ev.get('n')}: {scored})" if scored else ""
            print(f"  update    follows history with {follows.get('generator')}'s {how}{why}")
        manifests = "pretrain-manifest.json, hypernet-manifest.json"
        print(f"  data      {default['path']}/data/ ({manifests})")
    for p in presets:
        print(f"{p['name']:<15} preset: {p['description']}")
    print("any other --model: a local transformers directory or a hub id (safetensors only)")
    return 0 if default.get("verified", True) else 1


def add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mo = sub.add_parser(
        "models",
        help="list the installed base models and hypernetworks and where they came from",
        description="The embedded default (its card, checked against the sha256 of every "
        "shipped file) and the built-in presets. Exits 1 when the default is damaged.",
    )
    mo.add_argument("--json", action="store_true", help="print JSON for scripts")
    mo.set_defaults(func=cmd_models)
