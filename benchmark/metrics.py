"""Scores one assertion completion against its reference: strict exact match, the paper-style
reference-cut match (reported beside it, labelled), edit similarity, and the mean per-token
negative log-likelihood of the reference under teacher forcing.

Strict exact match never looks at the reference to decide where the prediction ends. The
generated line is cut by its own syntax (`syntax_cut`):

1. Take the first non-empty line of the completion.
2. Scan it left to right, skipping string literals (quotes, triple quotes, escapes), and stop
   at the first closing bracket that has no opening bracket in the completion, at a comma,
   semicolon or `#` outside brackets: that is where an assertion's target slot ends
   (`self.assertEqual(a, <target>)`, `assert x == <target>, "msg"`, `pytest.raises(<target>):`).
3. Keep the longest prefix of what is left that parses as one Python expression
   (`ast.parse(..., mode="eval")`); nothing parses -> the empty prediction.

Step 3 is generous in one way: `42 junk` becomes `42`. It never uses the reference, so it
cannot turn a wrong length into a match (`4200` stays `4200` against a reference `42`).

Whitespace is normalised (runs collapsed to one space, ends stripped) before comparing.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rapidfuzz import fuzz

from repo2lora.training.data import TaskExample, per_example_nll, tokenize_examples

_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = frozenset(_OPENERS.values())
_TOP_LEVEL_ENDS = frozenset({",", ";", "#"})


def normalize_whitespace(text: str) -> str:
    """Runs of whitespace collapsed to one space, ends stripped."""
    return " ".join(text.split())


def _first_line(completion: str) -> str:
    for line in completion.split("\n"):
        if line.strip():
            return line
    return ""


def _string_end(text: str, start: int) -> int:
    """Index just past the string literal opening at `start` (the end of `text` when the
    literal is unterminated)."""
    quote = text[start]
    delim = quote * 3 if text.startswith(quote * 3, start) else quote
    i = start + len(delim)
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(delim, i):
            return i + len(delim)
        i += 1
    return len(text)


def _structural_cut(line: str) -> str:
    """`line` up to its first unmatched closing bracket or top-level `,`, `;` or `#`."""
    depth = 0
    i = 0
    while i < len(line):
        ch = line[i]
        if ch in "\"'":
            i = _string_end(line, i)
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            if depth == 0:
                return line[:i]
            depth -= 1
        elif depth == 0 and ch in _TOP_LEVEL_ENDS:
            return line[:i]
        i += 1
    return line


def _parses(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def syntax_cut(completion: str) -> str:
    """The prediction a completion makes for an assertion's target slot, decided by the
    completion's own syntax only (see the module docstring)."""
    candidate = _structural_cut(_first_line(completion)).strip()
    tried = ""
    for end in range(len(candidate), 0, -1):
        piece = candidate[:end].rstrip()
        if piece != tried and _parses(piece):
            return piece
        tried = piece
    return ""


def strict_exact_match(prediction: str, reference: str) -> bool:
    """Whitespace-normalised equality of an already cut prediction and the reference."""
    return normalize_whitespace(prediction) == normalize_whitespace(reference)


def reference_cut_match(completion: str, reference: str) -> bool:
    """The reference paper's looser match, reported only beside strict EM and labelled: the
    (normalised) completion is cut to the reference's length, so any completion that merely
    starts with the reference counts."""
    ref = normalize_whitespace(reference)
    return normalize_whitespace(_first_line(completion))[: len(ref)] == ref


def edit_similarity(prediction: str, reference: str) -> float:
    """Normalised Indel similarity in [0, 1] (rapidfuzz `fuzz.ratio` / 100) of the
    whitespace-normalised strings."""
    return float(fuzz.ratio(normalize_whitespace(prediction), normalize_whitespace(reference)))


@dataclass(frozen=True)
class CompletionScore:
    """One completion's scores; `prediction` is the syntax-cut text strict EM compared."""

    prediction: str
    strict_em: bool
    reference_cut_em: bool
    edit_similarity: float


def score_completion(completion: str, reference: str) -> CompletionScore:
    """Strict EM and edit similarity on the syntax-cut prediction, plus the paper-style
    reference-cut match on the raw completion."""
    prediction = syntax_cut(completion)
    return CompletionScore(
        prediction=prediction,
        strict_em=strict_exact_match(prediction, reference),
        reference_cut_em=reference_cut_match(completion, reference),
        edit_similarity=edit_similarity(prediction, reference) / 100.0,
    )


@torch.no_grad()
def target_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[str],
    max_prompt_tokens: int,
    max_target_tokens: int,
    batch_size: int = 16,
) -> list[float]:
    """Mean per-token NLL (nats) of each reference target after its prompt, teacher-forced,
    in the order given. Prompts are cut from the front and targets from the back to the
    budgets, exactly as training batches are (`tokenize_examples`)."""
    examples = [TaskExample("", p, t) for p, t in zip(prompts, targets, strict=True)]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prefix))
    out = [0.0] * len(examples)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        tb = tokenize_examples(
            tokenizer, [examples[i] for i in idx], max_prompt_tokens, max_target_tokens
        )
        logits = model(
            input_ids=tb.input_ids.to(device), attention_mask=tb.attention_mask.to(device)
        ).logits
        nll = per_example_nll(logits, tb.labels.to(device))  # [b]
        for row, i in enumerate(idx):
            out[i] = float(nll[row])
    return out
