"""The decode path completions run on (`repo2lora.decoding`): the static-KV decoder, over the
served weight layout, gives exactly the tokens of transformers' own greedy `generate()` on the
tiny model, the embedded default, a Qwen2-shaped model and an adapted (merged or PEFT) model;
it keeps them through prompt reuse and cancellation, and it warns about nothing."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lsp_server.generation_model import GenerationModel
from repo2lora.decoding import (
    StaticKVDecoder,
    TransformersDecoder,
    in_layout,
    layout_of,
    make_decoder,
    prepare_for_decoding,
    set_linear_layout,
)
from repo2lora.generation import (
    Cancelled,
    CompletionTimings,
    GenerationConfig,
    PromptCache,
    generate_completion,
    prompt_ids,
)
from repo2lora.hypernet.checkpoint import load_hypernet
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.models.presets import byte_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("repo_encoder/chunker.py", "evo_state/store.py", "repo2lora/generation.py")
NEW_TOKENS = 24
PROMPT_TOKENS = 300
CFG = GenerationConfig(
    max_new_tokens=NEW_TOKENS, single_line=False, max_prompt_tokens=PROMPT_TOKENS, window_step=1
)


def _prompts() -> list[str]:
    """Cuts of this project's own source files: real code, several contexts per file."""
    out = []
    for rel in SOURCES:
        text = (ROOT / rel).read_text()
        out += [text[: len(text) * k // 4] for k in (1, 2, 3)]
    return out


PROMPTS = _prompts()


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> Iterator[None]:
    yield


def _greedy(model: Any, tokenizer: Any, text: str) -> str:
    """transformers' own greedy decoding of the prompt `generate_completion` builds."""
    ids = prompt_ids(tokenizer, text, PROMPT_TOKENS, step=1)
    x = torch.tensor([ids])
    out = model.generate(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id,
    )[0, len(ids) :].tolist()
    eos = tokenizer.eos_token_id
    kept = out[: out.index(eos)] if eos in out else out
    return str(tokenizer.decode(kept, skip_special_tokens=True))


def _served(model: Any, tokenizer: Any, text: str, **kwargs: Any) -> tuple[str, str]:
    t = CompletionTimings()
    return generate_completion(model, tokenizer, text, CFG, timings=t, **kwargs), t.decoder


@pytest.mark.parametrize("spec", ["tiny-random", None], ids=["tiny-random", "default"])
def test_the_served_path_gives_the_tokens_of_greedy_generate(spec: str | None) -> None:
    loaded = load_base_model(describe_base_model(spec))
    served = copy.deepcopy(loaded.model)
    prepare_for_decoding(served)  # the weight layout the server runs
    assert layout_of(served.lm_head.weight) == "column"
    for text in PROMPTS:
        got, decoder = _served(served, loaded.tokenizer, text)
        assert decoder == "StaticKVDecoder"
        assert got == _greedy(loaded.model, loaded.tokenizer, text), text[-80:]


def test_both_decoders_give_the_same_logits_bit_for_bit() -> None:
    """On the same weights, the static-KV loop mirrors transformers' SDPA forward: a whole
    prompt, one token, and a prompt continuing a cached start."""
    loaded = load_base_model(describe_base_model(None))
    ids = loaded.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"][-300:]
    fast, reference = StaticKVDecoder(loaded.model), TransformersDecoder(loaded.model)
    with torch.no_grad():
        for step in (ids[:200], ids[200:201], ids[201:203]):
            assert torch.equal(fast.feed(step), reference.feed(step))
        fast.truncate(150)
        reference.truncate(150)
        assert fast.length == reference.length == 150
        assert torch.equal(fast.feed(ids[150:260]), reference.feed(ids[150:260]))


def _qwen2() -> tuple[Any, Any]:
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
    )
    return Qwen2ForCausalLM(cfg).eval(), tok


def _mistral() -> tuple[Any, Any]:
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
    return MistralForCausalLM(cfg).eval(), tok


def _gpt2() -> tuple[Any, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=512,
        initializer_range=0.1,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    return GPT2LMHeadModel(cfg).eval(), tok


@pytest.mark.parametrize(
    ("build", "decoder"),
    [(_qwen2, "StaticKVDecoder"), (_mistral, "StaticKVDecoder"), (_gpt2, "TransformersDecoder")],
    ids=["qwen2 (q/k/v biases)", "mistral", "gpt2 (no static-KV path)"],
)
def test_other_architectures_decode_exactly_too(build: Any, decoder: str) -> None:
    model, tok = build()
    served = copy.deepcopy(model)
    prepare_for_decoding(served)
    for text in PROMPTS[:4]:
        got, used = _served(served, tok, text)
        assert used == decoder
        assert got == _greedy(model, tok, text)


@pytest.mark.parametrize("mode", ["merged", "peft"])
def test_an_adapted_model_decodes_as_transformers_does(mode: str) -> None:
    info = describe_base_model("tiny-random")
    hyper = load_hypernet(None, info)
    with torch.no_grad():
        weights = hyper.net.generate(torch.randn(hyper.net.cfg.state_dim) * 50).detached()
    weights.tensors = {p: (a, b * 300) for p, (a, b) in weights.tensors.items()}
    base = load_base_model(info)
    prepare_for_decoding(base.model)
    gen = GenerationModel(base, weights, mode)  # type: ignore[arg-type]
    gen.install(weights, commit="c")
    if mode == "merged":  # the merged weights are stored as the ones they replace
        target = gen.model.get_submodule(next(iter(weights.tensors)))
        assert layout_of(target.weight) == "column"
    plain = [_served(base.model, base.tokenizer, t)[0] for t in PROMPTS[:4]]
    for text in PROMPTS[:4]:
        got, used = _served(gen.model, gen.tokenizer, text)
        assert used == "StaticKVDecoder"
        assert got == _greedy(gen.model, gen.tokenizer, text)
    assert [_served(gen.model, gen.tokenizer, t)[0] for t in PROMPTS[:4]] != plain


def test_reuse_and_cancellation_change_nothing_but_the_work() -> None:
    m = load_base_model(describe_base_model(None))
    prepare_for_decoding(m.model)
    cache = PromptCache()
    text = PROMPTS[2][-700:]  # under the prompt budget: typing along keeps its start
    fresh = generate_completion(m.model, m.tokenizer, text, CFG)
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    with pytest.raises(Cancelled):  # stopped between decoding steps
        generate_completion(m.model, m.tokenizer, text, CFG, stop_after_three, cache, 1)
    again = generate_completion(m.model, m.tokenizer, text, CFG, cache=cache, cache_key=1)
    assert again == fresh
    n = len(prompt_ids(m.tokenizer, text, PROMPT_TOKENS, step=1))
    assert cache.reused_tokens == n - 1  # the cancelled run's prompt was kept
    typed = text + again  # the user types along: the decoded tokens' keys are reused too
    along = generate_completion(m.model, m.tokenizer, typed, CFG, cache=cache, cache_key=1)
    assert cache.reused_tokens > n + NEW_TOKENS // 2
    assert along == generate_completion(m.model, m.tokenizer, typed, CFG)


def test_generation_warns_about_nothing() -> None:
    m = load_base_model(describe_base_model("tiny-random"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in ("auto", "transformers"):
            cfg = GenerationConfig(max_new_tokens=4, decoder=kind)  # type: ignore[arg-type]
            cache = PromptCache()
            for text in (PROMPTS[0], PROMPTS[0] + "x"):  # the second reuses the cache
                generate_completion(m.model, m.tokenizer, text, cfg, cache=cache, cache_key=0)


def test_weight_layouts_keep_the_values() -> None:
    model = load_base_model(describe_base_model("tiny-random")).model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    set_linear_layout(model, "column")
    assert layout_of(model.model.layers[0].mlp.up_proj.weight) == "column"
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    set_linear_layout(model, "row")
    assert model.model.layers[0].mlp.up_proj.weight.is_contiguous()
    w = torch.randn(3, 5)
    assert in_layout(w, "row") is w and torch.equal(in_layout(w, "column"), w)


def test_an_unsupported_model_is_refused_by_the_static_decoder_only() -> None:
    model, _ = _gpt2()
    assert isinstance(make_decoder(model), TransformersDecoder)
    with pytest.raises(ValueError, match="Llama-family"):
        make_decoder(model, "static")


def test_a_cache_never_reuses_a_decoder_of_another_kind() -> None:
    m = load_base_model(describe_base_model("tiny-random"))
    cache = PromptCache()
    seen = []
    for kind in ("auto", "transformers", "auto"):
        t = CompletionTimings()
        cfg = GenerationConfig(max_new_tokens=4, decoder=kind)  # type: ignore[arg-type]
        generate_completion(m.model, m.tokenizer, PROMPTS[0], cfg, cache=cache, timings=t)
        seen.append((t.decoder, t.reused_tokens))
    assert seen == [("StaticKVDecoder", 0), ("TransformersDecoder", 0), ("StaticKVDecoder", 0)]


@pytest.mark.parametrize("mode", ["merged", "peft"])
def test_the_lean_path_follows_an_adapter_swap_bit_for_bit(mode: str) -> None:
    """One decoder kept across a swap (as the server's prompt cache keeps it): its fused
    projection weights are rebuilt from the swapped-in weights, and its logits stay those of
    transformers' forward on the adapted model, before and after."""
    info = describe_base_model("tiny-random")
    hyper = load_hypernet(None, info)
    base = load_base_model(info)
    prepare_for_decoding(base.model)
    with torch.no_grad():
        states = [torch.randn(hyper.net.cfg.state_dim) * 50 for _ in range(2)]
        made = [hyper.net.generate(s).detached() for s in states]
    for w in made:
        w.tensors = {p: (a, b * 300) for p, (a, b) in w.tensors.items()}
    gen = GenerationModel(base, made[0], mode)  # type: ignore[arg-type]
    ids = base.tokenizer(PROMPTS[1], add_special_tokens=False)["input_ids"][-200:]
    lean = StaticKVDecoder(gen.model)
    assert lean._lean  # float32 llama, standard norms, default rope
    seen = []
    with torch.no_grad():
        for weights in made:
            gen.install(weights, commit="c")
            lean.truncate(0)
            got = [lean.feed(ids[:150]), lean.feed(ids[150:151])]
            reference = TransformersDecoder(gen.model)
            assert torch.equal(got[0], reference.feed(ids[:150]))
            assert torch.equal(got[1], reference.feed(ids[150:151]))
            seen.append(got[1])
    assert not torch.equal(seen[0], seen[1])  # the swap reached the decoder
