"""Base language models: load by local directory or hub id, the in-process presets, and the
embedded default slot. Nothing here downloads weights unless the user names a hub id.
`repo2lora.models.loading` (transformers) is imported on first use of its names, so the
language server can read the embedded default's files before transformers has loaded."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from repo2lora.models.loading import (
        BaseModelInfo,
        LoadedModel,
        describe_base_model,
        load_base_model,
        model_identity,
    )

__all__ = [
    "BaseModelInfo",
    "LoadedModel",
    "describe_base_model",
    "load_base_model",
    "model_identity",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from repo2lora.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
