"""Bring your own model: for every transformers layout repo2lora supports (Llama, Qwen2,
Mistral, Gemma; GPT-2 and GPT-BigCode with their fused `c_attn`, GPT-2's as a Conv1D; GPT-NeoX's
`query_key_value`; Phi-3's `qkv_proj`), a tiny random-init model saved as a local model
directory goes the whole way a user's would: `repo2lora train` for two steps, a snapshot with
the trained hypernetwork, its PEFT adapter loaded by `PeftModel.from_pretrained` giving the
logits of the in-process application (per-sample hooks and merged weights), and one completion
through the language server. Also: the target choice and its errors, activation checkpointing,
and the training memory estimate against the tensors autograd keeps."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lsprotocol import types
from peft import PeftModel
from pygls.lsp.client import LanguageClient
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTBigCodeConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
)

from repo2lora import cli
from repo2lora.adapters.apply import merged_target_weights, weight_sharing_twin
from repo2lora.adapters.functional import functional_lora, weights_to_batched
from repo2lora.adapters.targets import find_lora_targets, select_targets, weightless_model
from repo2lora.hypernet.checkpoint import load_hypernet
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.models.presets import byte_tokenizer
from repo2lora.snapshot import snapshot_repository
from repo2lora.training.baselines import fresh_copy
from repo2lora.training.memory import (
    TrainShape,
    estimate_training,
    layer_activation_bytes,
    model_shapes,
)
from repo_encoder.errors import UserError
from tests.gitrepo import GitRepo

_IDS = dict(bos_token_id=256, eos_token_id=256, pad_token_id=256)  # the byte tokenizer's EOS
_LLAMA_LIKE = dict(
    vocab_size=260,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    **_IDS,
)
_GPT = dict(vocab_size=260, n_embd=32, n_layer=2, n_head=4, n_positions=1024, **_IDS)
_NEOX = {k: v for k, v in _LLAMA_LIKE.items() if k != "num_key_value_heads"}
# wider, for the memory formula: at 32 hidden a layer's few fixed-size tensors weigh too much
_WIDER = dict(hidden_size=128, intermediate_size=352, num_attention_heads=4)

# layout -> (its config, the --target-modules it is trained with, the module types that means)
LAYOUTS: dict[str, tuple[Callable[[], PretrainedConfig], str, tuple[str, ...]]] = {
    "llama": (lambda: LlamaConfig(**_LLAMA_LIKE), "attention", ("q_proj", "v_proj")),
    "qwen2": (lambda: Qwen2Config(**_LLAMA_LIKE), "attention", ("q_proj", "v_proj")),
    "mistral": (lambda: MistralConfig(**_LLAMA_LIKE), "q_proj,o_proj", ("o_proj", "q_proj")),
    "gemma": (lambda: GemmaConfig(head_dim=8, **_LLAMA_LIKE), "attention", ("q_proj", "v_proj")),
    "gpt2": (
        lambda: GPT2Config(**_GPT),
        "all-linear",
        ("attn.c_proj", "c_attn", "c_fc", "mlp.c_proj"),
    ),
    "gpt_bigcode": (lambda: GPTBigCodeConfig(**_GPT), "attention", ("c_attn",)),
    "gpt_neox": (
        lambda: GPTNeoXConfig(**_NEOX),
        "attention",
        ("query_key_value",),
    ),
    "phi3": (
        lambda: Phi3Config(**_LLAMA_LIKE),
        "qkv_proj,gate_up_proj",
        ("gate_up_proj", "qkv_proj"),
    ),
}

# a package whose later commits add tests with assertions (the evolving trainer's tasks)
V1 = {
    "shop/__init__.py": '"""A tiny shop."""\n',
    "shop/cart.py": (
        "TAX_RATE = 0.2\n\n\nclass Cart:\n    def __init__(self):\n        self.items = []\n\n"
        "    def add(self, name, price):\n        self.items.append((name, price))\n\n"
        "    def total(self):\n        return sum(p for _, p in self.items) * (1 + TAX_RATE)\n"
    ),
    "tests/test_cart.py": (
        "from shop.cart import Cart, TAX_RATE\n\n\ndef test_rate():\n    assert TAX_RATE == 0.2\n"
    ),
}
V2 = {
    "shop/discount.py": (
        "from shop.cart import Cart\n\nSUMMER = 'SUMMER10'\n\n\n"
        "def apply_code(cart, code):\n    return cart.total() * (0.9 if code == SUMMER else 1.0)\n"
    ),
    "tests/test_discount.py": (
        "from shop.cart import Cart\nfrom shop.discount import SUMMER, apply_code\n\n\n"
        + "".join(
            f"def test_code_{i}():\n    cart = Cart()\n    cart.add('item', {i})\n"
            f"    assert apply_code(cart, SUMMER) == {round(i * 1.2 * 0.9, 2)}\n\n\n"
            for i in range(1, 7)
        )
        + "def test_name():\n    assert SUMMER == 'SUMMER10'\n"
    ),
}
V3 = {
    "tests/test_items.py": (
        "from shop.cart import Cart\n\n\n"
        + "".join(
            f"def test_items_{i}():\n    cart = Cart()\n    cart.add('x{i}', 1)\n"
            f"    assert cart.items == [('x{i}', 1)]\n\n\n"
            for i in range(4)
        )
    ),
}
DOC = "from shop.cart import Cart\n\n\ndef checkout(cart):\n    value = "


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    repo = GitRepo(tmp_path_factory.mktemp("byom") / "shop")
    for files, msg in ((V1, "cart"), (V2, "discounts"), (V3, "items")):
        repo.commit(files, msg)
    return repo


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_model(config: PretrainedConfig, out: Path) -> Path:
    """A random-init model of `config` as a local model directory (safetensors + tokenizer)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(out))
    byte_tokenizer().save_pretrained(str(out))
    return out


# --- the language server, in this process over TCP -------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _one_completion(port: int, repo: GitRepo) -> tuple[str, dict[str, Any]]:
    client = LanguageClient("byom-test", "0")
    deadline = time.monotonic() + 60
    while True:
        try:
            await client.start_tcp("127.0.0.1", port)
            break
        except OSError:
            assert time.monotonic() < deadline, "the server never listened"
            await asyncio.sleep(0.05)
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities()
                )
            ),
            root_uri=repo.root.as_uri(),
            initialization_options={
                "watch": False,
                "debounceMs": 0,
                "singleLine": False,
                "maxNewTokens": 6,
            },
        )
    )
    client.initialized(types.InitializedParams())
    head = repo.git("rev-parse", "HEAD")
    while True:
        st = _plain(await client.protocol.send_request_async("repo2lora/status", {}))
        if st["adapter"]["commit"] == head and not st["update"]["running"]:
            break
        assert time.monotonic() < deadline, f"no adapter of HEAD within 60 s: {st}"
        await asyncio.sleep(0.05)
    uri = (repo.root / "shop" / "checkout.py").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "python", 1, DOC))
    )
    lines = DOC.split("\n")
    pos = types.Position(len(lines) - 1, len(lines[-1]))
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
            text_document=types.TextDocumentIdentifier(uri),
            position=pos,
        )
    )
    st = _plain(await client.protocol.send_request_async("repo2lora/status", {}))
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    assert isinstance(result, types.InlineCompletionList), result
    text = result.items[0].insert_text if result.items else ""
    return str(text), st


def _plain(value: Any) -> Any:
    """pygls gives untyped results as namedtuples; read them as JSON."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def serve_one_completion(args: list[str], repo: GitRepo) -> tuple[str, dict[str, Any]]:
    """`repo2lora serve --tcp` (the real server: the CLI, the protocol, the session) in a
    thread of this process, and one inline completion from a pygls client."""
    port = _free_port()
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            outcome["rc"] = cli.main(["serve", "--tcp", f"127.0.0.1:{port}", *args])
        except SystemExit as exc:  # pygls ends its loop with sys.exit after `exit`
            outcome["rc"] = exc.code
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        return asyncio.run(_one_completion(port, repo))
    finally:
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop after exit"
        assert "error" not in outcome, outcome


# --- the whole path, per layout ---------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_train_snapshot_peft_and_serve(layout: str, project: GitRepo, tmp_path: Path) -> None:
    make_config, choice, types_ = LAYOUTS[layout]
    model_dir = save_tiny_model(make_config(), tmp_path / "model")
    hn = tmp_path / "hypernet"
    rc = cli.main(
        [
            "train",
            "--generator",
            "code2lora-evo",
            "--repos",
            str(project.root),
            "--model",
            str(model_dir),
            "--out",
            str(hn),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--tbptt-window",
            "2",
            "--target-modules",
            choice,
            "--gradient-checkpointing",
            "on",
            "--json",
        ]
    )
    assert rc == 0
    card = json.loads((hn / "hypernet.json").read_text())
    assert tuple(card["config"]["target_modules"]) == types_
    log = [json.loads(line) for line in (hn / "train_log.jsonl").read_text().splitlines()]
    start = next(e for e in log if e["event"] == "start")
    assert start["gradient_checkpointing"] and start["estimate"]["memory_bytes"]["total"] > 0
    steps = [e for e in log if e["event"] == "step"]
    assert len(steps) == 2 and all(e["peak_memory_mb"] > 0 and e["seconds"] > 0 for e in steps)

    res = snapshot_repository(project.root, model=str(model_dir), hypernet=str(hn))
    adapter = Path(res.adapter_path)
    peft_cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(peft_cfg["target_modules"]) == sorted(types_)
    assert peft_cfg["fan_in_fan_out"] is (layout == "gpt2")
    assert not peft_cfg.get("modules_to_save") and not peft_cfg.get("use_dora")

    base = load_base_model(describe_base_model(str(model_dir)))
    ids = base.tokenizer(DOC, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = base.model(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(fresh_copy(base), str(adapter)).eval()
        from_peft = peft_model(input_ids=ids).logits
        targets = find_lora_targets(base.info.config, types_)
        assert res.weights is not None
        batched = weights_to_batched([res.weights], targets)
        with functional_lora(base.model, targets, batched, res.weights.scaling):
            hooked = base.model(input_ids=ids).logits
        staged = merged_target_weights(base.model, res.weights)
        twin = weight_sharing_twin(base.model, {f"{p}.weight" for p in staged})
        for path, w in staged.items():
            twin.get_submodule(path).weight.data = w
        merged = twin(input_ids=ids).logits
    assert (from_peft - plain).abs().max() > 1e-6, "the adapter must change the logits"
    torch.testing.assert_close(from_peft, hooked, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(from_peft, merged, atol=1e-5, rtol=1e-4)

    text, status = serve_one_completion(
        ["--model", str(model_dir), "--hypernet", str(hn), "--threads", "1"], project
    )
    assert status["adapter"]["version"] >= 1 and Path(status["adapter"]["path"]).is_dir()
    # the model ran on exactly the document before the cursor (one byte, one token); what a
    # random-init model says is noise, blank for some layouts
    runs = status["completions"]
    assert runs["model_runs"] == 1 and runs["last_prompt_tokens"] == len(DOC.encode())
    assert isinstance(text, str)


# --- targets -----------------------------------------------------------------------------------


def test_target_choice_errors_name_what_the_model_has(tmp_path: Path) -> None:
    gpt2 = weightless_model(GPT2Config(**_GPT))
    with pytest.raises(UserError, match=r"no projection named 'q_proj'.*c_attn, attn\.c_proj"):
        select_targets(gpt2, ("q_proj",))
    both = select_targets(gpt2, ("c_proj",))  # a short name matches both of GPT-2's c_proj
    assert {t.module_type for t in both} == {"attn.c_proj", "mlp.c_proj"}
    assert all(t.fan_in_fan_out for t in both)

    model_dir = save_tiny_model(GPT2Config(**_GPT), tmp_path / "gpt2")
    info = describe_base_model(str(model_dir))
    assert load_hypernet(None, info).net.cfg.target_modules == ("c_attn",)
    assert load_hypernet(None, info, ("all-linear",)).net.head.module_types == [
        "attn.c_proj",
        "c_attn",
        "c_fc",
        "mlp.c_proj",
    ]


def test_a_checkpoint_refuses_other_target_modules(
    project: GitRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hn = tmp_path / "hn"
    args = ["--model", "tiny-random", "--steps", "1", "--batch-size", "2", "--json"]
    assert cli.main(["train", "--repos", str(project.root), "--out", str(hn), *args]) == 0
    capsys.readouterr()
    rc = cli.main(
        [
            "snapshot",
            str(project.root),
            "--model",
            "tiny-random",
            "--hypernet",
            str(hn),
            "--target-modules",
            "all-linear",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("repo2lora: error: hypernetwork")
    assert "trained for target modules q_proj,v_proj" in err[0]
    same = ["--hypernet", str(hn), "--target-modules", "q_proj,v_proj", "--json"]
    assert cli.main(["snapshot", str(project.root), "--model", "tiny-random", *same]) == 0


def test_bf16_autocast_and_checkpointing_train_on_the_cpu_too(
    project: GitRepo, tmp_path: Path
) -> None:
    """The GPU path's precision and recompute, exercised where CI runs."""
    hn = tmp_path / "hn"
    args = ["--model", "tiny-random", "--steps", "2", "--batch-size", "2", "--json"]
    gpu_path = ["--precision", "bf16", "--gradient-checkpointing", "on"]
    assert (
        cli.main(["train", "--repos", str(project.root), "--out", str(hn), *args, *gpu_path]) == 0
    )
    log = [json.loads(line) for line in (hn / "train_log.jsonl").read_text().splitlines()]
    start = next(e for e in log if e["event"] == "start")
    assert start["precision"] == "bf16" and start["gradient_checkpointing"]
    losses = [e["loss"] for e in log if e["event"] == "step"]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)


def test_model_identity_tells_gpt2_sizes_apart() -> None:
    from repo2lora.models.loading import model_identity

    small, wider = GPT2Config(**_GPT), GPT2Config(**{**_GPT, "n_embd": 64})
    assert model_identity(small) != model_identity(wider)


# --- the training memory estimate --------------------------------------------------------------


def _kept_bytes_per_token(
    config: PretrainedConfig, choice: tuple[str, ...], b: int, t: int
) -> float:
    """Bytes autograd keeps per token for one forward of the frozen model with per-sample
    LoRA (parameters and the LoRA tensors themselves not counted)."""
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
    targets = select_targets(model, choice)
    layers = config.num_hidden_layers
    shapes = {t.module_type: (t.in_features, t.out_features) for t in targets}
    batched = {
        mt: (
            torch.randn(b, layers, 8, fi, requires_grad=True),
            torch.randn(b, layers, fo, 8, requires_grad=True),
        )
        for mt, (fi, fo) in shapes.items()
    }
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    skip |= {x.untyped_storage().data_ptr() for ab in batched.values() for x in ab}
    kept: dict[int, int] = {}

    def pack(x: torch.Tensor) -> torch.Tensor:
        ptr = x.untyped_storage().data_ptr()
        if ptr not in skip:
            kept[ptr] = x.untyped_storage().nbytes()
        return x

    ids = torch.randint(0, 256, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t - 8 :] = 0  # padding, as training batches have
    kept_by_autograd = torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x)
    with kept_by_autograd, functional_lora(model, targets, batched, 2.0):
        model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    return sum(kept.values()) / (b * t)


_QWEN2 = {**_LLAMA_LIKE, **_WIDER}
# (config class, its fields, the field that counts layers, --target-modules, tolerance)
MEMORY_CASES: dict[str, tuple[type[PretrainedConfig], dict[str, Any], str, str, float]] = {
    "qwen2-attention": (Qwen2Config, _QWEN2, "num_hidden_layers", "attention", 0.05),
    "qwen2-all-linear": (Qwen2Config, _QWEN2, "num_hidden_layers", "all-linear", 0.05),
    "phi3-all-linear": (Phi3Config, _QWEN2, "num_hidden_layers", "all-linear", 0.05),
    "gpt2-attention": (GPT2Config, {**_GPT, "n_embd": 128}, "n_layer", "attention", 0.2),
    "bigcode-all-linear": (GPTBigCodeConfig, {**_GPT, "n_embd": 128}, "n_layer", "all-linear", 0.2),
    "neox-all-linear": (GPTNeoXConfig, {**_NEOX, **_WIDER}, "num_hidden_layers", "all-linear", 0.2),
}


@pytest.mark.parametrize("case", list(MEMORY_CASES))
def test_layer_activation_formula_matches_what_autograd_keeps(case: str) -> None:
    cls, fields, layers_field, choice, tolerance = MEMORY_CASES[case]
    b, t = 2, 64
    kept = {
        n: _kept_bytes_per_token(cls(**{**fields, layers_field: n}), (choice,), b, t)
        for n in (2, 4)
    }
    per_layer = (kept[4] - kept[2]) / 2
    config = cls(**{**fields, layers_field: 2})
    shapes = model_shapes(config)
    targets = [x for x in select_targets(weightless_model(config), (choice,)) if x.layer == 0]
    assert layer_activation_bytes(shapes, targets, 8, 4) == pytest.approx(per_layer, rel=tolerance)


def test_memory_estimate_for_a_1_5b_shape(capsys: pytest.CaptureFixture[str]) -> None:
    from repo2lora.training.memory import main

    assert main(["--shape", "qwen2.5-coder-1.5b", "--batch", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 1.4e9 < out["model"]["params"] < 1.7e9  # Qwen2.5-Coder-1.5B: 1.54B
    mem = out["memory_bytes"]
    assert mem["weights"] == out["model"]["params"] * 2
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    est = estimate_training(
        describe_base_model("tiny-random").config, TrainShape(batch=2, checkpointing=False)
    )
    with_ck = estimate_training(
        describe_base_model("tiny-random").config, TrainShape(batch=2, checkpointing=True)
    )
    assert with_ck["step_flops"] > est["step_flops"]  # the recompute
