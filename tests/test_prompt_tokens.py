"""Prompts tokenised piece by piece (`repo2lora.prompt_tokens`) give exactly the ids of the whole
text: random cuts of real source files (and text the pieces' rule has to get right: blank lines,
tabs, CRLF, special tokens, non-ASCII), with the embedded default's tokenizer and a GPT-2-style
one; a tokenizer it cannot split is called on the whole text."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from repo2lora.models import embedded
from repo2lora.models.presets import byte_tokenizer
from repo2lora.prompt_tokens import PromptTokenizer, split_pieces

ROOT = Path(__file__).resolve().parent.parent
ODD = (
    "x = 1\n\n\n\tdef f():\n  \n<|endoftext|>\nclass A:\r\n    pass\r\n# ü ñ 中文\n\n \n"
    "'''doc\n'''\n@dec\n\x0cy\n\u00a0z = 2\n\u2003w\nif x:\n\n\n    return 's'\n"
)


def _texts() -> list[str]:
    files = [*sorted((ROOT / "repo_encoder").glob("*.py"))[:6], ROOT / "lsp_server" / "prompt.py"]
    rng = random.Random(3)
    out = [ODD, ODD * 3, "", "\n", "a", "\n\n\nb"]
    for f in files:
        text = f.read_text()
        out += [text[: rng.randrange(len(text) + 1)] for _ in range(40)]
        out.append(text[: rng.randrange(len(text))] + ODD + text[: rng.randrange(len(text))])
    return out


def _gpt2_style() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], min_frequency=1)
    sample = [(ROOT / "repo_encoder" / "chunker.py").read_text(), ODD]
    tok.train_from_iterator(sample, trainer)
    return tok


class _Backend:
    """The calls `PromptTokenizer` makes of a transformers tokenizer, over a backend."""

    def __init__(self, backend: Tokenizer) -> None:
        self.backend_tokenizer = backend
        self.eos_token_id = 0
        self.calls = 0

    def __call__(self, text: str, add_special_tokens: bool = False, verbose: bool = False) -> dict:
        self.calls += 1
        return {"input_ids": self.backend_tokenizer.encode(text, add_special_tokens=False).ids}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))


@pytest.mark.parametrize("name", ["default", "gpt2-style"])
def test_pieces_give_the_ids_of_the_whole_text(name: str) -> None:
    backend = (
        Tokenizer.from_file(str(embedded.DEFAULT_DIR / "tokenizer.json"))
        if name == "default"
        else _gpt2_style()
    )
    whole = _Backend(backend)
    pieces = PromptTokenizer(_Backend(backend))
    assert pieces.splits
    for text in _texts():
        assert "".join(split_pieces(text)) == text
        want = whole(text)["input_ids"]
        assert pieces(text)["input_ids"] == want, repr(text[-120:])
        assert pieces(text)["input_ids"] == want  # from the kept pieces


def test_a_tokenizer_it_cannot_split_is_called_on_the_whole_text() -> None:
    tok = byte_tokenizer()  # byte-level without the regex: one pre-token, merges may cross lines
    wrapped = PromptTokenizer(tok)
    assert not wrapped.splits
    assert wrapped(ODD)["input_ids"] == tok(ODD, add_special_tokens=False)["input_ids"]
    assert wrapped.decode([65, 66]) == tok.decode([65, 66])
