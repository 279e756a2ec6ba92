"""The training driver every generator's trainer shares: resuming from the last checkpoint, the
step loop (backward, clipping, optimizer step), the JSONL log, the evaluation and checkpoint
cadence, and the final checkpoint. A trainer supplies only what one step computes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import nn

from repo2lora.hypernet.checkpoint import load_generator, save_hypernet
from repo2lora.models.loading import BaseModelInfo
from repo2lora.training.checkpoint import (
    latest_checkpoint,
    read_optimizer,
    read_trainer_state,
    write_checkpoint,
)
from repo2lora.training.placement import memory_kind, peak_memory_mb


@dataclass
class StepLog:
    step: int
    loss: float
    tokens: int  # target tokens of the global batch
    tokens_per_s: float
    seconds: float = 0.0
    peak_memory_mb: float = 0.0  # this process's peak since training started (`placement`)


@dataclass
class TrainResult:
    out_dir: str
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    eval: dict[str, float]


class LoopSettings(Protocol):
    """The fields of a training config the driver reads."""

    @property
    def steps(self) -> int: ...
    @property
    def grad_clip(self) -> float: ...
    @property
    def eval_every(self) -> int: ...
    @property
    def checkpoint_every(self) -> int: ...


def freeze_base(acc: Accelerator, base_model: Any) -> None:
    """The frozen base model on the accelerator's device (bf16 when training in bf16)."""
    base_model.requires_grad_(False)
    base_model.to(acc.device)
    if acc.mixed_precision == "bf16":
        base_model.to(torch.bfloat16)


@dataclass
class StepOutcome:
    """One step of one process: what it backpropagates (already scaled so that DDP's gradient
    average is the global batch's objective), the loss to report, the global batch's target
    tokens (0 when the objective is not per token), and the units the rate counts."""

    objective: torch.Tensor
    loss: float
    tokens: int
    units: float

    @classmethod
    def per_token(
        cls, loss_sum: torch.Tensor, n_tok: float, global_tokens: float, world: int
    ) -> StepOutcome:
        """A summed target-token NLL of this process's `n_tok` tokens, whose global batch
        has `global_tokens`: DDP averages gradients over processes, so the objective is scaled
        to make the result the global per-token mean."""
        return cls(
            loss_sum * world / max(1.0, global_tokens),
            float(loss_sum.detach()) / max(1.0, n_tok),
            int(n_tok * world),
            n_tok * world,
        )


class TrainingRun:
    """One generator's run in `out`: `net` and `opt` resumed from the last checkpoint there
    (unless `resume` is false), then `run` drives the steps."""

    def __init__(
        self,
        acc: Accelerator,
        net: nn.Module,
        opt: torch.optim.Optimizer,
        base: BaseModelInfo,
        out: Path,
        config: dict[str, Any],
        card: dict[str, Any] | None = None,
        resume: bool = True,
    ) -> None:
        self.acc, self.net, self.base, self.out = acc, net, base, out
        self.config, self.card = config, card or {}
        self.opt: Any = opt
        self.model: Any = None
        self.step = self.tokens = 0
        ckpt = latest_checkpoint(out) if resume else None
        if ckpt is not None:
            net.load_state_dict(load_generator(str(ckpt), base).net.state_dict())
            opt.load_state_dict(read_optimizer(ckpt))
            st = read_trainer_state(ckpt)
            self.step, self.tokens = int(st["step"]), int(st.get("tokens", 0))

    def prepare(self, loss_module: nn.Module) -> Any:
        """The loss module and optimizer wrapped for the accelerator; returns the module."""
        self.model, self.opt = self.acc.prepare(loss_module, self.opt)
        self.out.mkdir(parents=True, exist_ok=True)
        return self.model

    def unwrapped(self) -> Any:
        """The generator being trained (the loss module's `net`), outside any DDP wrapper."""
        return self.acc.unwrap_model(self.model).net

    def log_start(self, base_model: Any, net: nn.Module, cfg: Any, checkpointing: bool) -> None:
        """The run's first log line: where it runs, in what precision, its sizes, and the memory
        `repo2lora.training.memory` expects a step to need (to compare with the steps' peaks)."""
        from repo2lora.training.memory import TrainShape, estimate_training

        acc = self.acc
        world = acc.num_processes
        shape = TrainShape(
            batch=-(-int(cfg.batch_size) // world),
            prompt_tokens=int(cfg.max_prompt_tokens),
            target_tokens=int(cfg.max_target_tokens),
            rank=int(cfg.rank),
            target_modules=tuple(getattr(net.cfg, "target_modules", cfg.target_modules)),
            precision="bf16" if acc.mixed_precision == "bf16" else "fp32",
            checkpointing=checkpointing,
            processes=world,
        )
        hyper_params = sum(p.numel() for p in net.parameters())
        estimate = estimate_training(base_model.config, shape, hypernet_params=hyper_params)
        if acc.device.type == "cuda":  # encoding ran on this device in float32 weights before
            torch.cuda.reset_peak_memory_stats(acc.device)
        self.log(
            {
                "event": "start",
                "device": str(acc.device),
                "processes": world,
                "precision": shape.precision,
                "gradient_checkpointing": checkpointing,
                "memory_kind": memory_kind(acc.device),
                "hypernet_params": hyper_params,
                "base_params": sum(p.numel() for p in base_model.parameters()),
                "estimate": estimate,
            }
        )

    def log(self, event: dict[str, Any]) -> None:
        if self.acc.is_main_process:
            with (self.out / "train_log.jsonl").open("a") as fh:
                fh.write(json.dumps({"time": time.time(), **event}) + "\n")

    def _state(self, at: int, loss: float) -> dict[str, Any]:
        return {"step": at, "tokens": self.tokens, "loss": loss, "config": self.config}

    def save(self, at: int, loss: float) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            net, state = self.unwrapped(), self._state(at, loss)
            write_checkpoint(
                self.out,
                at,
                lambda d: save_hypernet(net, self.base, d, training=state, **self.card),
                self.opt.optimizer if hasattr(self.opt, "optimizer") else self.opt,
                state,
            )
            self.log({"event": "checkpoint", "step": at, "tokens": self.tokens})
        self.acc.wait_for_everyone()

    def run(
        self,
        settings: LoopSettings,
        compute: Callable[[int], StepOutcome],
        *,
        evaluate: Callable[[], dict[str, float]] | None = None,
        on_step: Callable[[StepLog], None] | None = None,
        stop_after: int | None = None,
    ) -> TrainResult:
        """Steps until `settings.steps` (or `stop_after`, as a kill would), evaluating and
        checkpointing at their cadence, then the final checkpoint (the generator and its card
        in `out`) when the run is complete."""
        steps, grad_clip = settings.steps, settings.grad_clip
        eval_every, checkpoint_every = settings.eval_every, settings.checkpoint_every
        acc, model = self.acc, self.model
        t0 = time.perf_counter()
        last_loss = float("nan")
        eval_result: dict[str, float] = {}
        while self.step < steps:
            t = time.perf_counter()
            outcome = compute(self.step)
            acc.backward(outcome.objective)
            if grad_clip:
                acc.clip_grad_norm_(model.parameters(), grad_clip)
            self.opt.step()
            self.opt.zero_grad()
            self.step += 1
            self.tokens += outcome.tokens
            last_loss = outcome.loss
            if acc.device.type == "cuda":  # the step's kernels are queued, not yet run
                torch.cuda.synchronize(acc.device)
            dt = time.perf_counter() - t
            entry = StepLog(
                self.step,
                last_loss,
                outcome.tokens,
                outcome.units / max(dt, 1e-9),
                dt,
                peak_memory_mb(acc.device),
            )
            if on_step is not None and acc.is_main_process:
                on_step(entry)
            self.log({"event": "step", **asdict(entry)})
            if evaluate is not None and (_due(self.step, eval_every) or self.step == steps):
                eval_result = evaluate()
                self.log({"event": "eval", "step": self.step, **eval_result})
            if _due(self.step, checkpoint_every) or self.step == steps:
                self.save(self.step, last_loss)
            if stop_after is not None and self.step >= stop_after:
                break
        if acc.is_main_process and self.step >= steps:
            state = self._state(self.step, last_loss)
            save_hypernet(
                self.unwrapped(), self.base, self.out, training=state, eval=eval_result, **self.card
            )
        acc.wait_for_everyone()
        return TrainResult(
            str(self.out),
            self.step,
            self.tokens,
            time.perf_counter() - t0,
            last_loss,
            eval_result,
        )


def _due(step: int, every: int) -> bool:
    """Whether an every-N action (evaluation, checkpoint) falls on `step`; N <= 0: only at the
    end."""
    return every > 0 and step % every == 0
