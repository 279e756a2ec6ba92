"""Benchmark metrics: the syntax cut that ends a prediction without looking at the reference,
strict vs reference-cut exact match, edit similarity, and the teacher-forced target NLL."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.metrics import (
    edit_similarity,
    reference_cut_match,
    score_completion,
    strict_exact_match,
    syntax_cut,
    target_nll,
)
from repo2lora.models import describe_base_model, load_base_model


@pytest.mark.parametrize(
    ("completion", "prediction"),
    [
        ("42", "42"),
        ("42)\n", "42"),  # self.assertEqual(x, 42)
        ("compute_flux(3))", "compute_flux(3)"),
        ('5, "message")', "5"),  # the rest of the call, and `assert x == 5, "msg"`
        ("FluxError):", "FluxError"),  # with pytest.raises(FluxError):
        ("[0, 17, 34]", "[0, 17, 34]"),  # commas inside brackets stay
        ('"a,b)" + x)', '"a,b)" + x'),  # brackets and commas inside strings are text
        ("'''x''')", "'''x'''"),
        ("3.5  # approx", "3.5"),
        ("x == 5 and y, 3", "x == 5 and y"),
        ("foo(", "foo"),  # unclosed: the longest prefix that parses
        ("\n\n  7)", "7"),  # the first non-empty line
        (")", ""),
        ("", ""),
        ("4200", "4200"),
    ],
)
def test_syntax_cut(completion: str, prediction: str) -> None:
    assert syntax_cut(completion) == prediction


def test_strict_em_is_stricter_than_the_reference_cut() -> None:
    # A completion that only starts with the reference: the paper's cut calls it a match.
    longer = score_completion("4200", "42")
    assert not longer.strict_em and longer.reference_cut_em
    assert longer.prediction == "4200"
    closed = score_completion("42)", "42")
    assert closed.strict_em and closed.prediction == "42"
    assert score_completion("  [1,   2]", "[1, 2]").strict_em  # whitespace-normalised
    assert not strict_exact_match("[1,2]", "[1, 2]")  # but not reformatted


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_the_prediction_never_depends_on_the_reference(
    completion: str, ref_a: str, ref_b: str
) -> None:
    a, b = score_completion(completion, ref_a), score_completion(completion, ref_b)
    assert a.prediction == b.prediction == syntax_cut(completion)
    assert a.strict_em == (" ".join(a.prediction.split()) == " ".join(ref_a.split()))


def test_reference_cut_match_is_a_prefix_test() -> None:
    assert reference_cut_match("compute_flux(3) + 1", "compute_flux(3)")
    assert not reference_cut_match("compute_fl", "compute_flux(3)")


def test_edit_similarity() -> None:
    assert edit_similarity("abc", "abc") == 100.0
    assert edit_similarity("abc", "xyz") == 0.0
    assert edit_similarity("a  b", "a b") == 100.0
    assert 0 < score_completion("compute_flux(4))", "compute_flux(3)").edit_similarity < 1


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    base = load_base_model(describe_base_model("tiny-random"))
    return base.model, base.tokenizer


def _manual_nll(model: object, tokenizer: object, prompt: str, target: str) -> float:
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    t = tokenizer(target, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    ids = torch.tensor([p + t])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # type: ignore[operator]
    return -sum(float(logp[len(p) + i - 1, tok]) for i, tok in enumerate(t)) / len(t)


def test_target_nll_is_teacher_forced_and_batch_independent(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    prompts = ["assert total == ", "def test_x():\n    self.assertEqual(x.base, ", "y = "]
    targets = ["42", "DEFAULT_BASE", '"kex-12"']
    batched = target_nll(model, tokenizer, prompts, targets, 256, 64, batch_size=3)
    single = [
        target_nll(model, tokenizer, [p], [t], 256, 64)[0]
        for p, t in zip(prompts, targets, strict=True)
    ]
    manual = [_manual_nll(model, tokenizer, p, t) for p, t in zip(prompts, targets, strict=True)]
    for b, s, h in zip(batched, single, manual, strict=True):
        assert b == pytest.approx(h, abs=1e-4)
        assert s == pytest.approx(h, abs=1e-4)
    # a longer budget-cut prompt changes the number: the cut really applies
    cut = target_nll(model, tokenizer, [prompts[1]], [targets[1]], 4, 64)[0]
    assert cut != pytest.approx(single[1], abs=1e-4)
