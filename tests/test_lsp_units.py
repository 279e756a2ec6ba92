"""The language server's library parts, called directly: prompt building and post-processing,
the completion cache, the workspace file rule, watcher classification, the update debounce,
reading adapters back, and the generation model's hot swap (shared weights, encoder untouched)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from lsp_server import session as session_module
from lsp_server.cache import CompletionCache
from lsp_server.config import RUNTIME_OPTIONS, ServerConfig, apply_options, parse_host_port
from lsp_server.events import QuietEvents
from lsp_server.follower import RepositoryFollower
from lsp_server.generation_model import GenerationModel
from lsp_server.prompt import Prompt, postprocess, prompt_at
from lsp_server.session import Session, resolve_models
from lsp_server.watcher import classify_change
from lsp_server.workspace_files import (
    OutsideWorkspace,
    UnknownDocument,
    inside_workspace,
    read_workspace_file,
)
from repo2lora.adapters.apply import attach_lora
from repo2lora.adapters.peft_dir import adapter_fingerprint, load_peft_adapter, save_peft_adapter
from repo2lora.adapters.weights import LoraWeights, neutral_adapter
from repo2lora.generation import Cancelled
from repo2lora.hypernet.checkpoint import load_hypernet
from repo2lora.models.loading import LoadedModel, describe_base_model, load_base_model
from repo_encoder.embed import embed_texts
from repo_encoder.errors import UserError
from tests.gitrepo import SAMPLE_V1, GitRepo

# -- prompt -------------------------------------------------------------------------------


def test_the_prompt_is_the_document_before_the_cursor_and_nothing_else() -> None:
    text = "import os\r\n\r\ndef main():\r\n    path = os.\r\n\r\nmain()\r\n"
    offset = text.index("os.\r\n") + 3
    p = prompt_at(text, offset)
    assert p.prefix == "import os\n\ndef main():\n    path = os."
    assert p.suffix == "\n\nmain()\n"
    assert p.line_prefix == "    path = os." and p.line_suffix == ""
    assert prompt_at("abc", 99) == Prompt("abc", "")
    assert prompt_at("abc", -4) == Prompt("", "abc")
    assert prompt_at("x = foo_ba", 10).word == "foo_ba"


@pytest.mark.parametrize(
    ("prefix", "suffix", "raw", "shown"),
    [
        ("y = ", "", "compute(x)\nnext_line()", "compute(x)"),  # one line
        ("y = ", "", "\nz = 1", ""),  # mid-line, the model ends the line: nothing to show
        ("print(foo(", "", "a))) + 1", "a))"),  # closes a bracket nobody opened: cut
        ("x = f(a, ", ")\n", "b)", "b"),  # the auto-closed bracket after the cursor
        ("total = ", " + offset\n", "base + offset", "base"),  # repeats the rest of the line
        ("x = ", "1 + y\n", "1", "1"),  # a one-character overlap that is not punctuation
        ("def f():\n    ", "\n    return 1\n", "return 1", ""),  # copies the line below
        ("def f():\n    ", "", "\n    return 2\nmore", "\n    return 2"),  # at a blank line
        ("s = '(", "", "a) b'", "a) b'"),  # brackets inside a string are not structure
        ("x = ", "", "   \n", ""),
    ],
)
def test_postprocess(prefix: str, suffix: str, raw: str, shown: str) -> None:
    assert postprocess(raw, Prompt(prefix, suffix)) == shown


def test_multiline_mode_keeps_lines() -> None:
    assert postprocess("a\nb\n", Prompt("x = ", ""), single_line=False) == "a\nb"


# -- cache --------------------------------------------------------------------------------


def test_cache_serves_exact_prompts_and_typing_along_a_shown_completion() -> None:
    cache = CompletionCache(capacity=3)
    cache.put(Prompt("x = com", "\n"), 1, "pute(a, b)")
    hit = cache.lookup(Prompt("x = com", "\n"), 1)
    assert hit is not None and hit.text == "pute(a, b)" and not hit.typed_along
    along = cache.lookup(Prompt("x = compu", "\n"), 1)
    assert along is not None and along.text == "te(a, b)" and along.typed_along
    assert cache.lookup(Prompt("x = compu", "\n"), 2) is None  # another adapter
    assert cache.lookup(Prompt("x = compu", "\n)"), 1) is None  # the text after changed
    assert cache.lookup(Prompt("x = comz", "\n"), 1) is None  # typed something else
    assert cache.lookup(Prompt("x = compute(a, b)", "\n"), 1) is None  # typed all of it
    for i in range(3):
        cache.put(Prompt(f"p{i}", ""), 1, "s")
    assert len(cache) == 3 and cache.lookup(Prompt("x = com", "\n"), 1) is None
    assert CompletionCache(capacity=0).lookup(Prompt("a", ""), 0) is None


# -- workspace files ----------------------------------------------------------------------


def test_only_files_inside_the_workspace_are_read(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (tmp_path / "secret.py").write_text("KEY = 2\n")
    (root / "out.py").symlink_to(tmp_path / "secret.py")
    (root / "inner.py").symlink_to(root / "pkg" / "a.py")
    roots = [root.resolve()]
    assert read_workspace_file(roots, (root / "pkg" / "a.py").as_uri()) == "A = 1\n"
    assert read_workspace_file(roots, (root / "inner.py").as_uri()) == "A = 1\n"
    for uri in (
        (tmp_path / "secret.py").as_uri(),
        (root / "out.py").as_uri(),
        f"file://{root}/pkg/../../secret.py",
        "untitled:Untitled-1",
        "https://example.com/a.py",
    ):
        with pytest.raises(OutsideWorkspace):
            read_workspace_file(roots, uri)
    with pytest.raises(UnknownDocument):
        read_workspace_file(roots, (root / "missing.py").as_uri())
    with pytest.raises(UnknownDocument):
        read_workspace_file(roots, (root / "pkg").as_uri())
    assert inside_workspace(roots, root.as_uri()) == roots[0]
    with pytest.raises(OutsideWorkspace, match="no workspace folder"):
        inside_workspace([], (root / "pkg" / "a.py").as_uri())


# -- watcher ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        (".git/HEAD", "git"),
        (".git/packed-refs", "git"),
        (".git/refs/heads/main", "git"),
        (".git/refs/heads/feature/x", "git"),
        (".git/refs/heads/main.lock", None),
        (".git/objects/ab/cdef", None),
        (".git/index", None),
        (".git/logs/HEAD", None),
        ("pkg/mod.py", "source"),
        ("setup.py", "source"),
        ("README.md", None),
        (".repo2lora/adapters/x.py", None),
        (".venv/lib/python3.11/site.py", None),
        ("pkg/__pycache__/mod.py", None),
    ],
)
def test_classify_change(tmp_path: Path, rel: str, kind: str | None) -> None:
    assert classify_change(tmp_path, [tmp_path / ".git"], str(tmp_path / rel)) == kind


def test_a_linked_work_tree_git_dir_outside_the_root(tmp_path: Path) -> None:
    git_dir = tmp_path / "main" / ".git" / "worktrees" / "wt"
    assert classify_change(tmp_path / "wt", [git_dir], str(git_dir / "HEAD")) == "git"
    assert classify_change(tmp_path / "wt", [git_dir], str(tmp_path / "elsewhere.py")) is None


# -- update debounce ----------------------------------------------------------------------


def test_follower_coalesces_a_burst_of_changes_into_one_update() -> None:
    runs: list[bool] = []
    follower = RepositoryFollower(runs.append, debounce_s=0.2)
    follower.start()
    try:
        waits = [follower.request(f"change {i}") for i in range(5)]
        assert follower.pending == 5 and not runs
        for w in waits:
            w.result(timeout=10)
        assert runs == [False] and follower.runs == 1
        t0 = time.monotonic()
        follower.request("regenerate", force=True).result(timeout=10)
        assert runs == [False, True] and time.monotonic() - t0 < 0.2  # no debounce
    finally:
        follower.stop()


def test_follower_hands_a_failure_to_its_waiters_and_keeps_running() -> None:
    calls = []

    def run(force: bool) -> None:
        calls.append(force)
        if len(calls) == 1:
            raise UserError("state.db is damaged")

    follower = RepositoryFollower(run, debounce_s=0.0)
    follower.start()
    try:
        with pytest.raises(UserError, match="damaged"):
            follower.request("first", immediate=True).result(timeout=10)
        follower.request("second", immediate=True).result(timeout=10)
        assert len(calls) == 2
    finally:
        follower.stop()


# -- config -------------------------------------------------------------------------------


def test_client_options_are_validated() -> None:
    cfg, problems = apply_options(
        ServerConfig(),
        {"maxNewTokens": 12, "singleLine": False, "debounceMs": -1, "colour": "red", "watch": 1},
    )
    assert cfg.max_new_tokens == 12 and not cfg.single_line and cfg.debounce_ms == 25
    assert cfg.watch and len(problems) == 3
    cfg, problems = apply_options(ServerConfig(), {"watch": False}, RUNTIME_OPTIONS)
    assert cfg.watch and "restart" in problems[0]
    assert apply_options(ServerConfig(), None) == (ServerConfig(), [])
    assert apply_options(ServerConfig(), [1])[1]
    assert parse_host_port("127.0.0.1:2087") == ("127.0.0.1", 2087)
    assert parse_host_port("[::1]:80") == ("::1", 80)
    for bad in ("2087", "host:", "host:99999", ":80"):
        with pytest.raises(UserError, match="HOST:PORT"):
            parse_host_port(bad)


# -- adapters and the generation model ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[LoadedModel, LoraWeights]:
    info = describe_base_model("tiny-random")
    hyper = load_hypernet(None, info)
    with torch.no_grad():
        weights = hyper.net.generate(torch.randn(hyper.net.cfg.state_dim) * 50).detached()
    # scale B up so the adapter visibly moves the logits
    weights.tensors = {p: (a, b * 300) for p, (a, b) in weights.tensors.items()}
    return load_base_model(info), weights


def test_a_written_adapter_reads_back_identically(
    tmp_path: Path, tiny: tuple[LoadedModel, LoraWeights]
) -> None:
    _, weights = tiny
    out = save_peft_adapter(weights, tmp_path / "adapter", "tiny-random")
    back = load_peft_adapter(out)
    assert (back.rank, back.alpha, back.target_modules) == (
        weights.rank,
        weights.alpha,
        weights.target_modules,
    )
    assert back.tensors.keys() == weights.tensors.keys()
    for p, (a, b) in weights.tensors.items():
        assert torch.equal(back.tensors[p][0], a) and torch.equal(back.tensors[p][1], b)
    assert adapter_fingerprint(out) == adapter_fingerprint(out)
    with pytest.raises(UserError, match="cannot read"):
        load_peft_adapter(tmp_path)


def _logits(model: object, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # type: ignore[operator]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("mode", ["merged", "peft"])
def test_hot_swap_adapts_generation_and_never_the_encoder(
    tiny: tuple[LoadedModel, LoraWeights], mode: str
) -> None:
    base, weights = tiny
    ids = torch.tensor([[5, 17, 99, 3, 42, 7]])
    plain = _logits(base.model, ids)
    texts = ["def f(x):\n    return x + 1\n"]
    encoded = embed_texts(base.model, base.tokenizer, texts)
    gen = GenerationModel(base, neutral_adapter(weights), mode)  # type: ignore[arg-type]
    assert gen.installed.version == 0
    assert torch.allclose(_logits(gen.model, ids), plain, atol=1e-5)  # neutral = base model

    gen.install(weights, commit="c1")
    reference = attach_lora(
        load_base_model(describe_base_model("tiny-random")).model, weights, "tiny-random"
    )
    adapted = _logits(gen.model, ids)
    assert not torch.allclose(adapted, plain, atol=1e-3)
    assert torch.allclose(adapted, _logits(reference, ids), atol=1e-4)
    assert gen.installed.version == 1 and gen.installed.commit == "c1"
    # the encoding model is the same frozen base model: same logits, same chunk vectors
    assert torch.equal(_logits(base.model, ids), plain)
    assert torch.equal(embed_texts(base.model, base.tokenizer, texts), encoded)
    # and the two share every frozen weight (merged mode owns only the LoRA targets)
    base_ptrs = {p.data_ptr() for p in base.model.parameters()}
    gen_ptrs = {p.data_ptr() for n, p in gen.model.named_parameters() if "lora_" not in n}
    owned = gen_ptrs - base_ptrs
    assert len(owned) == (len(weights.tensors) if mode == "merged" else 0)

    bad = LoraWeights(weights.rank, weights.alpha, weights.target_modules, {})
    with pytest.raises(ValueError, match="does not fit"):
        gen.install(bad, commit="c2")
    assert gen.installed.version == 1 and torch.equal(_logits(gen.model, ids), adapted)


def test_a_swap_waits_for_the_running_generation(tiny: tuple[LoadedModel, LoraWeights]) -> None:
    base, weights = tiny
    gen = GenerationModel(base, neutral_adapter(weights), "merged")
    installed = threading.Event()

    def swap() -> None:
        gen.install(weights, commit="c")
        installed.set()

    with gen.lock:  # a completion is decoding
        t = threading.Thread(target=swap, daemon=True)
        t.start()
        assert not installed.wait(0.2) and gen.installed.version == 0
    assert installed.wait(10) and gen.installed.version == 1
    t.join()


def test_the_server_process_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    from lsp_server.server import forbid_network

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "0")  # restored after the test
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    forbid_network()
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert huggingface_hub.constants.is_offline_mode()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


# -- the session ----------------------------------------------------------------------------


def test_completions_are_answered_while_an_update_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitRepo(tmp_path / "repo")
    head = repo.commit(SAMPLE_V1, "v1")
    entered, gate = threading.Event(), threading.Event()
    real_update = session_module.update_repository

    def held_update(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        gate.wait(60)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(session_module, "update_repository", held_update)
    cfg = ServerConfig(model="tiny-random", watch=False, max_new_tokens=8)
    session = Session([repo.root], cfg, resolve_models("tiny-random", None), QuietEvents())
    session.start()
    try:
        session.ready.result(timeout=60)
        assert entered.wait(60) and session.status()["update"]["running"]
        res = session.complete(prompt_at("value = ", 8), lambda: False)
        assert res.source == "model" and res.version == 0  # the base model, meanwhile

        steps = iter(range(100))
        with pytest.raises(Cancelled):
            session.complete(prompt_at("other = ", 8), lambda: next(steps) >= 3)
        assert session.stats.cancelled == 1 and session.stats.in_flight == 0

        gate.set()
        deadline = time.monotonic() + 60
        while session.status()["adapter"]["commit"] != head:
            assert time.monotonic() < deadline, session.status()
            time.sleep(0.05)
        assert session.status()["adapter"]["version"] == 1
        assert session.cached(prompt_at("value = ", 8)) is None  # older version: not served
    finally:
        gate.set()
        session.close()


def test_a_workspace_without_history_is_served_by_the_base_model(tmp_path: Path) -> None:
    cfg = ServerConfig(model="tiny-random", watch=False, max_new_tokens=4)
    models = resolve_models("tiny-random", None)
    plain = tmp_path / "plain"
    plain.mkdir()
    events = QuietEvents()
    session = Session([plain], cfg, models, events)
    session.start()
    try:
        session.ready.result(timeout=60)
        assert session.status()["repository"] is None
        assert any("not inside a git repository" in m for _, _, m in events.messages)
        assert session.complete(prompt_at("x = ", 4), lambda: False).version == 0
        with pytest.raises(UserError, match="nothing to regenerate"):
            session.regenerate()
    finally:
        session.close()

    repo = GitRepo(tmp_path / "fresh")  # `git init` without a commit yet
    events = QuietEvents()
    session = Session([repo.root], cfg, models, events)
    session.start()
    try:
        session.ready.result(timeout=60)
        deadline = time.monotonic() + 60
        while session.last_error is None:
            assert time.monotonic() < deadline, session.status()
            time.sleep(0.05)
        assert "no commits yet" in session.last_error
        assert sum("no commits yet" in m for kind, _, m in events.messages if kind == "show") == 1
        head = repo.commit(SAMPLE_V1, "v1")
        session.regenerate().result(timeout=60)
        st = session.status()
        assert st["adapter"]["commit"] == head and st["update"]["last_error"] is None
        assert st["update"]["follows"] == "evo"  # tiny-random's default: the GRU
    finally:
        session.close()


def test_a_model_that_fails_to_load_is_reported_in_the_status(tmp_path: Path) -> None:
    loaded = load_base_model(describe_base_model("tiny-random"))
    model_dir = tmp_path / "model"
    loaded.model.save_pretrained(str(model_dir))
    loaded.tokenizer.save_pretrained(str(model_dir))
    models = resolve_models(str(model_dir), None)  # the config reads fine: serving starts
    (model_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    repo = GitRepo(tmp_path / "repo")
    repo.commit(SAMPLE_V1, "v1")
    events = QuietEvents()
    session = Session([repo.root], ServerConfig(watch=False), models, events)
    session.start()
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises
            session.ready.result(timeout=60)
        model = session.status()["model"]
        assert not model["ready"]
        assert model["error"] and "\n" not in model["error"]
        assert any("loading the model failed" in m for _, _, m in events.messages)
    finally:
        session.close()
