"""The peft baselines the hypernetwork is measured against: one shared LoRA trained on every
training repository's tasks, and one LoRA per repository trained on its own source and its
in-repo training tasks (its wall time and steps recorded: the cost the hypernetwork's single
forward pass replaces)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from repo2lora.adapters.defaults import DEFAULT_RANK, default_alpha
from repo2lora.adapters.targets import DEFAULT_TARGETS, select_targets, uses_fan_in_fan_out
from repo2lora.models.loading import LoadedModel
from repo2lora.training.data import TaskExample, per_example_nll, tokenize_examples

BASELINE_CARD = "repo2lora-baseline.json"


@dataclass(frozen=True)
class LoraTrainConfig:
    steps: int = 200
    batch_size: int = 8
    lr: float = 3e-3
    rank: int = DEFAULT_RANK
    target_modules: tuple[str, ...] = DEFAULT_TARGETS  # a choice: `targets.select_targets`
    max_prompt_tokens: int = 256
    max_target_tokens: int = 32
    source_chunk_tokens: int = 128  # source text is cut into pieces of this many tokens
    seed: int = 0
    # a saved adapter of the same shape to start from (training it on), instead of a fresh one
    init_from: str | None = None


@dataclass
class BaselineResult:
    adapter_dir: str
    steps: int
    seconds: float
    final_loss: float
    examples: int
    source_pieces: int


def source_examples(
    repo: str, texts: list[str], tokenizer: Any, piece_tokens: int
) -> list[TaskExample]:
    """Next-token training on a repository's source: each piece is all target, no prefix."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), piece_tokens):
            out.append(TaskExample(repo, "", tokenizer.decode(ids[i : i + piece_tokens])))
    return out


def train_lora(
    base: LoadedModel,
    examples: list[TaskExample],
    cfg: LoraTrainConfig = LoraTrainConfig(),
    source_texts: list[str] | None = None,
    on_step: Callable[[int, float, PeftModel], None] | None = None,
) -> tuple[PeftModel, float, int]:
    """Train a plain peft LoRA on `examples` (+ next-token pieces of `source_texts`) over a
    fresh copy of the base weights; the LoRA init is seeded, so every call with the same config
    starts from the same A. `on_step(step, loss, model)` sees every step. Returns the model,
    the last loss and the number of source pieces."""
    data = list(examples)
    pieces = source_examples("", source_texts or [], base.tokenizer, cfg.source_chunk_tokens)
    data += pieces
    if not data:
        raise ValueError("no training data for the LoRA baseline")
    targets = select_targets(base.model, cfg.target_modules)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        peft_model = get_peft_model(
            fresh_copy(base),
            LoraConfig(
                r=cfg.rank,
                lora_alpha=default_alpha(cfg.rank),
                target_modules=sorted({t.module_type for t in targets}),
                fan_in_fan_out=uses_fan_in_fan_out(targets),
                lora_dropout=0.0,
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
    if cfg.init_from is not None:
        start_from_adapter(peft_model, Path(cfg.init_from))
    peft_model.train()
    device = next(peft_model.parameters()).device  # where the base model was put
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    loss_value = float("nan")
    for step in range(1, cfg.steps + 1):
        if len(order) < cfg.batch_size:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            order += perm
        batch = [data[i] for i in order[: cfg.batch_size]]
        del order[: cfg.batch_size]
        tb = tokenize_examples(
            base.tokenizer,
            batch,
            cfg.max_prompt_tokens,
            max(cfg.max_target_tokens, cfg.source_chunk_tokens),
        )
        ids, mask, labels = (x.to(device) for x in (tb.input_ids, tb.attention_mask, tb.labels))
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
        n = (labels[:, 1:] != -100).sum(1).float()
        loss = (per_example_nll(logits, labels) * n).sum() / n.sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        loss_value = float(loss.detach())
        if on_step is not None:
            on_step(step, loss_value, peft_model)
    return peft_model, loss_value, len(pieces)


def start_from_adapter(peft_model: PeftModel, adapter_dir: Path) -> None:
    """Load a saved adapter's A and B into a fresh peft model of the same shape (a ValueError
    when its modules or shapes differ)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    own = sum("lora_" in k for k in peft_model.state_dict())
    try:
        result: Any = set_peft_model_state_dict(peft_model, saved)
    except RuntimeError as exc:  # torch: a size mismatch (another rank)
        raise ValueError(f"{adapter_dir}: its LoRA shapes differ from this run's") from exc
    missing = any("lora_" in k for k in result.missing_keys)
    if result.unexpected_keys or missing or len(saved) != own:
        raise ValueError(f"{adapter_dir}: its LoRA modules differ from this run's")


def check_baseline_model(adapter_dir: Path, model_key: str, hint: str = "") -> dict[str, Any]:
    """A saved baseline's card, or a UserError when it adapts another base model than
    `model_key` (`hint` is appended to the message)."""
    from repo_encoder.errors import UserError

    card: dict[str, Any] = json.loads((adapter_dir / BASELINE_CARD).read_text())
    key = card.get("base_model", {}).get("model_key")
    if key is not None and key != model_key:
        raise UserError(f"{adapter_dir} is a LoRA of base model {key}, not {model_key}{hint}")
    return card


def train_lora_baseline(
    base: LoadedModel,
    examples: list[TaskExample],
    out_dir: str | Path,
    cfg: LoraTrainConfig = LoraTrainConfig(),
    source_texts: list[str] | None = None,
    on_step: Callable[[int, float, PeftModel], None] | None = None,
) -> BaselineResult:
    """`train_lora`, saved as a PEFT adapter directory with its wall time and steps."""
    t0 = time.perf_counter()
    peft_model, loss_value, pieces = train_lora(base, examples, cfg, source_texts, on_step)
    out = Path(out_dir)
    peft_model.save_pretrained(str(out))
    res = BaselineResult(
        str(out), cfg.steps, time.perf_counter() - t0, loss_value, len(examples), pieces
    )
    (out / BASELINE_CARD).write_text(
        json.dumps({"result": asdict(res), "config": asdict(cfg)}, indent=2)
    )
    return res


def fresh_copy(base: LoadedModel) -> Any:
    """A separate instance with the same weights, so peft's in-place wrapping never touches
    the caller's model."""
    cls = type(base.model)
    model = cls(base.model.config)
    model.load_state_dict(base.model.state_dict())
    model.to(next(base.model.parameters()).device)  # where the base was put
    model.eval()
    model.requires_grad_(False)
    return model


def load_lora_baseline(base: LoadedModel, adapter_dir: str | Path) -> PeftModel:
    """The base model (a fresh copy) with a saved baseline adapter, for evaluation."""
    model = PeftModel.from_pretrained(fresh_copy(base), str(adapter_dir))
    model.eval()
    return model
