"""Training examples and batches: a prompt prefix and the target it must produce, tied to the
repository (and commit) whose encoding generates the adapter."""

from __future__ import annotations

import functools
import inspect
import io
import tokenize
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from repo_encoder.names import NameIndex


@dataclass(frozen=True)
class TaskExample:
    """One supervised completion: `target` must follow `prefix`. `repo` keys the repository
    encoding (and `step` the commit index in an evolving walk; -1 for static)."""

    repo: str
    prefix: str
    target: str
    step: int = -1
    task_id: str = ""


@dataclass
class RepoEncoding:
    """A repository's encoder input: chunk vectors of a snapshot [n, d] and, for evolving
    training, the per-commit diff inputs in commit order."""

    name: str
    vectors: torch.Tensor  # [n, d]
    diffs: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int]]] = field(
        default_factory=list
    )  # per commit after the snapshot: (brought_in [n_in, d], taken_out [n_out, d], counts)
    commits: list[str] = field(default_factory=list)  # commits[0] is the snapshot commit
    # the names each step's commit defines (names[0]: the snapshot's), for generators that read
    # them (code2lora-names); empty when they were not read
    names: list[NameIndex] = field(default_factory=list)
    # the snapshot's chunk texts, where a names memory reads how the code uses its names (the
    # same for every step); empty when they were not read
    texts: list[str] = field(default_factory=list)


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [b, t]
    attention_mask: torch.Tensor  # [b, t]
    labels: torch.Tensor  # [b, t], -100 except on target tokens
    target_tokens: int


def tokenize_examples(
    tokenizer: Any, examples: list[TaskExample], max_prompt_tokens: int, max_target_tokens: int
) -> TokenBatch:
    """Prefix (cut from the front) + target, right-padded; loss only on target tokens."""
    rows: list[tuple[list[int], list[int]]] = []
    for ex in examples:
        p = tokenizer(ex.prefix, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
        t = tokenizer(ex.target, add_special_tokens=False)["input_ids"][:max_target_tokens]
        rows.append((p, t))
    width = max(len(p) + len(t) for p, t in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        seq = p + t
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p) : len(seq)] = torch.tensor(t)
    return TokenBatch(ids, mask, labels, sum(len(t) for _, t in rows))


_CLOSERS = {"(": ")", "[": "]", "{": "}"}


@functools.lru_cache(maxsize=8192)  # a training run asks again for the same prefixes
def target_end(prefix: str) -> str:
    """What closes the target slot a prefix leaves open, read from the prefix's own syntax: the
    closer of the innermost bracket it leaves open (`pytest.raises(` -> ")"), else the end of
    the line ("\n")."""
    stack: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(prefix).readline):
            if tok.type != tokenize.OP:
                continue
            if tok.string in _CLOSERS:
                stack.append(_CLOSERS[tok.string])
            elif stack and tok.string == stack[-1]:
                stack.pop()
            elif tok.string in _CLOSERS.values():
                stack.clear()  # unbalanced: the statement it closed is not ours
    except (tokenize.TokenError, SyntaxError):
        pass  # the prefix ends inside its statement: what was read so far decides
    return stack[-1] if stack else "\n"


def with_target_end(examples: list[TaskExample]) -> list[TaskExample]:
    """The examples with what closes each target appended to it (`target_end`), so that
    training also teaches where a completion stops."""
    return [replace(ex, target=ex.target + target_end(ex.prefix)) for ex in examples]


def pad_vector_sets(sets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[n_i, d] sets -> vectors [b, n_max, d] and mask [b, n_max]."""
    d = sets[0].shape[1]
    n = max(1, max(s.shape[0] for s in sets))
    out = torch.zeros(len(sets), n, d)
    mask = torch.zeros(len(sets), n, dtype=torch.bool)
    for i, s in enumerate(sets):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def target_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (target) positions."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=-100,
    )


def per_example_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean per-token NLL of each example's target [b] (the benchmark's smooth metric)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        shift_logits.transpose(1, 2), shift_labels, ignore_index=-100, reduction="none"
    )  # [b, t-1]
    n = (shift_labels != -100).sum(1).clamp(min=1)
    return nll.sum(1) / n


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions whose logits predict a target token in some example [k] (sorted): labels
    shifted by one."""
    return (labels[:, 1:] != -100).any(0).nonzero().flatten()


def target_nll(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean per-token NLL of each example's target [b], as `per_example_nll` of the full
    logits, but with the LM head run only at the positions that predict a target token
    (`logits_to_keep`): over a long prompt and a large vocabulary the full logits would be most
    of a training step's memory. `weights` [b, t] (aligned with `labels`): each token's NLL
    counts that many times in the sum (the mean still divides by the token count)."""
    keep = target_positions(labels).to(input_ids.device)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        logits = model(**kwargs, use_cache=False, logits_to_keep=keep).logits  # [b, k, V]
    else:
        logits = model(**kwargs).logits[:, keep]
    wanted = labels.to(logits.device)[:, keep + 1]  # [b, k]
    nll = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2), wanted, ignore_index=-100, reduction="none"
    )  # [b, k]
    if weights is not None:
        nll = nll * weights.to(logits.device)[:, keep + 1]
    n = (wanted != -100).sum(1).clamp(min=1)
    return nll.sum(1) / n
