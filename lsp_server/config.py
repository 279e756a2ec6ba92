"""The language server's settings: one dataclass with defaults, read once from the command line
and the client's `initializationOptions` (and `workspace/didChangeConfiguration` for the knobs
that are safe to change while serving)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from repo2lora.generation import GenerationConfig
from repo_encoder.errors import UserError

if TYPE_CHECKING:  # the module stays free of torch: `repo2lora serve` reads it before torch
    from repo2lora.decoding import DecoderKind

LoraMode = Literal["auto", "merged", "peft"]


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server decides by. Times are in milliseconds, as editors configure them.

    `lora_mode`: "merged" gives the generation model its own copy of the LoRA target weights
    with the adapter folded in (no per-token overhead); "peft" wraps it as a PeftModel (extra
    LoRA matmuls every token, no copied weights); "auto" merges float32 weights and uses peft
    for half precision, where folding a small adapter into the weights would round it away."""

    model: str | None = None
    hypernet: str | None = None
    target_modules: tuple[str, ...] | None = None  # None: what the hypernetwork was trained for
    lora_mode: LoraMode = "auto"
    threads: int = 0  # torch intra-op threads; 0: half the CPU cores (at least one)
    max_new_tokens: int = 48
    single_line: bool = True
    max_prompt_tokens: int = 768
    debounce_ms: int = 25  # per document: a newer request within this window replaces an older
    update_debounce_ms: int = 750  # quiet time after the last repository change before updating
    cache_size: int = 256
    follow_worktree: bool = True  # fold saved, uncommitted edits into the adapter
    watch: bool = True  # watch the repository with watchdog (HEAD, refs, saved files)
    decoder: DecoderKind = "auto"  # the forward completions run on (repo2lora.decoding)
    device: str = "cpu"  # where the model runs ("cuda" on a GPU machine)
    # serve the base model from `repo2lora.models.light_llama` while transformers loads
    # (`lsp_server.fast_start`); off: nothing is served before transformers and peft are loaded
    light_start: bool = True

    def generation(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            single_line=self.single_line,
            max_prompt_tokens=self.max_prompt_tokens,
            decoder=self.decoder,
        )

    def torch_threads(self) -> int:
        return self.threads if self.threads > 0 else max(1, (os.cpu_count() or 2) // 2)


# client option name -> (field, type, lowest, highest); the editor-facing names are camelCase
_OPTIONS: dict[str, tuple[str, type, int, int]] = {
    "maxNewTokens": ("max_new_tokens", int, 1, 4096),
    "singleLine": ("single_line", bool, 0, 1),
    "maxPromptTokens": ("max_prompt_tokens", int, 16, 32768),
    "debounceMs": ("debounce_ms", int, 0, 5000),
    "updateDebounceMs": ("update_debounce_ms", int, 0, 600_000),
    "cacheSize": ("cache_size", int, 0, 100_000),
    "followWorkTree": ("follow_worktree", bool, 0, 1),
    "watch": ("watch", bool, 0, 1),
}
# what may change while serving (the rest shapes threads and watchers set up at start)
RUNTIME_OPTIONS = frozenset({"maxNewTokens", "singleLine", "maxPromptTokens", "debounceMs"})


def apply_options(
    config: ServerConfig, options: Any, allowed: frozenset[str] | None = None
) -> tuple[ServerConfig, list[str]]:
    """`config` with the client's options applied, and one message per option that was
    ignored (unknown, not changeable now, or out of range) for the client's log."""
    if options is None:
        return config, []
    if not isinstance(options, Mapping):
        return config, [f"repo2lora options must be an object, not {type(options).__name__}"]
    changes: dict[str, Any] = {}
    problems = []
    for name, value in options.items():
        spec = _OPTIONS.get(name)
        if spec is None:
            problems.append(f"unknown repo2lora option {name!r} ignored")
            continue
        if allowed is not None and name not in allowed:
            problems.append(f"repo2lora option {name!r} only takes effect on restart")
            continue
        field, kind, low, high = spec
        if kind is bool:
            if not isinstance(value, bool):
                problems.append(f"repo2lora option {name!r} must be true or false")
                continue
        elif isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"repo2lora option {name!r} must be an integer in [{low}, {high}]")
            continue
        changes[field] = value
    return replace(config, **changes), problems


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--tcp {text!r} is not HOST:PORT (e.g. 127.0.0.1:2087)")
    return host, int(port)
