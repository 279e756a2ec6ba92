"""The config of one `repo2lora pretrain` invocation: a resumed run's own (only this
invocation's clock changes), a warm start's, one sized by hand (`--hidden`), or one sized from
the compute budget (with the plan that sized it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from repo2lora.pretrain.budget import config_for_budget
from repo2lora.pretrain.config import PretrainConfig
from repo2lora.pretrain.train_lm import stored_config
from repo_encoder.errors import UserError


def run_config(
    out: str | Path,
    fresh: PretrainConfig,
    *,
    warm_start: str | None = None,
    hidden: int = 0,
    layers: int = 0,
    intermediate: int = 0,
    steps: int = 0,
    tokens: int = 0,
    budget_minutes: float = 0.0,
    flops: float | None = None,
    max_params: int | None = None,
) -> tuple[PretrainConfig, dict[str, Any]]:
    """The config to run, and the budget plan behind it (empty unless sized from the budget).
    `fresh` holds this invocation's settings, used when `out` holds no run to resume."""
    cfg = stored_config(out)
    if cfg is None and warm_start:
        cfg = stored_config(warm_start, warm_start=True)
    if cfg is not None:  # resuming: the run's own config; only this invocation's clock changes
        return replace(cfg, minutes=fresh.minutes), {}
    if hidden:
        heads = max(1, hidden // 32)
        sized = replace(
            fresh,
            hidden_size=hidden,
            layers=layers or 4,
            heads=heads,
            kv_heads=max(1, heads // 2),
            steps=steps or fresh.steps,
            intermediate=intermediate or int(hidden * 8 / 3 // 16 * 16),
        )
        return sized, {}
    budget = budget_minutes or fresh.minutes
    if not tokens and not budget:
        raise UserError("give a budget: --tokens N or --minutes M (or --hidden to size by hand)")
    return config_for_budget(fresh, tokens or None, budget, flops, max_params)
