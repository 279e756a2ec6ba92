"""The light loader (`repo2lora.models.light_llama`): a model directory read without
transformers gives the logits of the transformers model bit for bit, and the same greedy
completions, on the tiny model, the embedded default and qwen2- and mistral-shaped models; what
it would not reproduce is refused."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from repo2lora.decoding import StaticKVDecoder, prepare_for_decoding
from repo2lora.generation import GenerationConfig, PromptCache, generate_completion
from repo2lora.models import describe_base_model, embedded, load_base_model
from repo2lora.models.light_config import LightModelError, read_light_config
from repo2lora.models.light_llama import load_light_model, load_light_tokenizer
from repo2lora.models.loading import model_identity
from repo2lora.models.presets import byte_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("repo_encoder/chunker.py", "evo_state/store.py", "lsp_server/prompt.py")
CFG = GenerationConfig(max_new_tokens=24, single_line=False, max_prompt_tokens=300, window_step=1)


def _prompts() -> list[str]:
    out = []
    for rel in SOURCES:
        text = (ROOT / rel).read_text()
        out += [text[: len(text) * k // 4] for k in (1, 2, 3)]
    return out


PROMPTS = _prompts()


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> Iterator[None]:
    yield


def _saved(model: Any, tokenizer: Any, where: Path) -> Path:
    model.save_pretrained(str(where))
    tokenizer.save_pretrained(str(where))
    return where


def _tiny(where: Path) -> Path:
    loaded = load_base_model(describe_base_model("tiny-random"))
    return _saved(loaded.model, loaded.tokenizer, where)


def _qwen2(where: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.1,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    return _saved(Qwen2ForCausalLM(cfg).eval(), tok, where)


def _mistral(where: Path) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        sliding_window=None,
        initializer_range=0.1,
        eos_token_id=tok.eos_token_id,
    )
    return _saved(MistralForCausalLM(cfg).eval(), tok, where)


def _default(where: Path) -> Path:
    return embedded.DEFAULT_DIR


BUILDS = {"tiny-random": _tiny, "default": _default, "qwen2": _qwen2, "mistral": _mistral}


@pytest.fixture(scope="module", params=list(BUILDS))
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return BUILDS[request.param](tmp_path_factory.mktemp(request.param))


def _both(model_dir: Path) -> tuple[Any, Any, Any, Any]:
    """(transformers model, its tokenizer, light model, light tokenizer), both laid out for
    decoding as the server lays them out."""
    full = load_base_model(describe_base_model(str(model_dir)))
    light = load_light_model(model_dir)
    for m in (full.model, light):
        prepare_for_decoding(m)
    return full.model, full.tokenizer, light, load_light_tokenizer(model_dir)


def test_the_light_model_gives_the_same_logits_bit_for_bit(model_dir: Path) -> None:
    """A whole prompt, one token, a prompt continuing a cached start: every step's logits."""
    full, tok, light, light_tok = _both(model_dir)
    ids = tok(PROMPTS[4], add_special_tokens=False)["input_ids"][-300:]
    assert light_tok(PROMPTS[4])["input_ids"][-300:] == ids
    a, b = StaticKVDecoder(full), StaticKVDecoder(light)
    with torch.no_grad():
        for step in (ids[:200], ids[200:201], ids[201:203]):
            assert torch.equal(a.feed(step), b.feed(step))
        a.truncate(150)
        b.truncate(150)
        assert torch.equal(a.feed(ids[150:260]), b.feed(ids[150:260]))


def test_the_light_model_completes_exactly_as_the_served_path(model_dir: Path) -> None:
    full, tok, light, light_tok = _both(model_dir)
    assert light_tok.eos_token_id == tok.eos_token_id
    cache = PromptCache()
    for text in PROMPTS:
        want = generate_completion(full, tok, text, CFG)
        assert generate_completion(light, light_tok, text, CFG, cache=cache) == want, text[-60:]
        ids = tok(text[-400:], add_special_tokens=False)["input_ids"]
        assert light_tok(text[-400:])["input_ids"] == ids
        assert light_tok.decode(ids, skip_special_tokens=True) == tok.decode(
            ids, skip_special_tokens=True
        )


def test_the_light_config_has_the_identity_transformers_gives(model_dir: Path) -> None:
    """The identity a hypernetwork checkpoint records, computed from config.json alone."""
    info = describe_base_model(str(model_dir))
    fields = read_light_config(model_dir).identity_fields()
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert digest == model_identity(info.config) == info.identity


def _edited(src: Path, where: Path, **changes: Any) -> Path:
    where.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (where / f.name).write_bytes(f.read_bytes())
    raw = json.loads((where / "config.json").read_text())
    raw.update(changes)
    (where / "config.json").write_text(json.dumps(raw))
    return where


@pytest.mark.parametrize(
    "changes",
    [
        {"model_type": "gpt2"},
        {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}},
        {"dtype": "bfloat16"},
        {"hidden_act": "gelu"},
        {"num_key_value_heads": None},
        {"num_hidden_layers": 3},  # a layer the checkpoint does not hold
    ],
    ids=["gpt2", "rope scaling", "bfloat16", "gelu", "no kv heads", "missing weights"],
)
def test_what_it_would_not_reproduce_is_refused(changes: dict[str, Any], tmp_path: Path) -> None:
    src = _tiny(tmp_path / "tiny")
    with pytest.raises(LightModelError):
        load_light_model(_edited(src, tmp_path / "edited", **changes))


def test_a_tokenizer_transformers_would_post_process_is_refused(tmp_path: Path) -> None:
    src = _tiny(tmp_path / "tiny")
    meta = json.loads((src / "tokenizer_config.json").read_text())
    assert load_light_tokenizer(src).eos_token_id == byte_tokenizer().eos_token_id
    for change in ({"tokenizer_class": "LlamaTokenizer"}, {"add_prefix_space": True}):
        (src / "tokenizer_config.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(LightModelError):
            load_light_tokenizer(src)


def test_a_light_model_shares_nothing_with_the_files_it_read(tmp_path: Path) -> None:
    """The weights are in memory: the directory can change under a running server."""
    src = _tiny(tmp_path / "tiny")
    light = load_light_model(src)
    before = copy.deepcopy(light.state_dict())
    (src / "model.safetensors").write_bytes(b"gone")
    assert all(torch.equal(before[k], v) for k, v in light.state_dict().items())
