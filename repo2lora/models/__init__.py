"""Base language models: load by local directory or hub id, the in-process presets, and the
embedded default slot. Nothing here downloads weights unless the user names a hub id."""

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
