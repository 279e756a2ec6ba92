"""The names memory proves its mechanism on the synthetic suite: trained end to end on some
repositories, it makes the embedded default model complete a held-out repository's own
exception name, a name no training repository contains, where the model alone cannot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmark.metrics import score_completion
from repo2lora.adapters.apply import attach_lora, weight_sharing_twin
from repo2lora.generation import GenerationConfig, generate_completion
from repo2lora.hypernet.checkpoint import load_generator
from repo2lora.hypernet.name_memory import NameInput, NameProbe
from repo2lora.models import describe_base_model, load_base_model
from repo2lora.tasks.datasets import encode_repo
from repo2lora.tasks.synthetic import generate_suite
from repo2lora.tasks.training_data import build_training_data
from repo2lora.training.data import TaskExample, target_nll, tokenize_examples
from repo2lora.training.hypernet_trainer import train_hypernet
from repo2lora.training.shared import TrainConfig

_WORD = re.compile(r"[A-Za-z_]\w*")


@pytest.fixture(scope="module")
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _names_task(ex: TaskExample, defined: set[str]) -> bool:
    return any(w in defined for w in _WORD.findall(ex.target))


def test_a_held_out_repositorys_own_exception_is_completed_with_the_adapter(
    tmp_path: Path, threads: None
) -> None:
    repos = [r.path for r in generate_suite(tmp_path / "suite", 5, 1, seed=0)]
    train_paths, held_out = repos[:4], repos[4]
    base = load_base_model(describe_base_model(None))  # the embedded (pretrained) default
    data = build_training_data(train_paths, base, evolving=False, test_share=0.0)
    # the tasks whose target names something its repository defines
    train = [
        ex
        for ex in data.train
        if _names_task(ex, {n.name for n in data.encodings[ex.repo].names[0].names()})
    ]
    cfg = TrainConfig(
        generator="code2lora-names",
        steps=45,
        batch_size=8,
        lr=3e-3,
        max_prompt_tokens=96,
        max_target_tokens=16,
        checkpoint_every=1000,
        eval_every=1000,
    )
    train_hypernet(base, data.encodings, train, tmp_path / "names", cfg)
    net = load_generator(str(tmp_path / "names"), base.info).net
    net.eval()

    test = encode_repo(held_out, base)
    index = test.encoding.names[0]
    error = next(n.name for n in index.names() if n.kind == "exception")
    assert not any(error in p.read_text() for r in train_paths for p in r.rglob("*.py"))
    tasks = [t for t in test.static_tasks if t.target == error]  # `pytest.raises(<error>)`
    assert tasks

    probe = NameProbe(base.model, base.tokenizer, net.cfg.names_tokens)
    with torch.no_grad():
        state = net.encode(test.encoding.vectors)
        weights = net.generate(state, NameInput(index.names(), probe)).detached()
        adapted = attach_lora(weight_sharing_twin(base.model), weights)
    gen = GenerationConfig(max_new_tokens=16, max_prompt_tokens=256)

    def exact(model: object) -> int:
        return sum(
            score_completion(
                generate_completion(model, base.tokenizer, t.prefix, gen), t.target
            ).strict_em
            for t in tasks
        )

    def nll(model: object) -> float:
        exs = [TaskExample("x", t.prefix, t.target) for t in tasks]
        tb = tokenize_examples(base.tokenizer, exs, 256, 16)
        with torch.no_grad():
            return float(target_nll(model, tb.input_ids, tb.attention_mask, tb.labels).mean())

    assert exact(base.model) == 0
    assert exact(adapted) >= 1
    # the adapter cuts the target's NLL to under a third of the base model's (the pretrained
    # default already gives it about 1.1 nats from the prompt; the adapter about 0.2)
    assert nll(adapted) < nll(base.model) / 3


def test_prior_selection_holds_exceptions_first_then_the_most_mentioned() -> None:
    from repo2lora.hypernet.name_memory import prior_order
    from repo_encoder.names import RepoName

    def name(word: str, kind: str, mentions: int) -> RepoName:
        return RepoName(word, kind, 1, 1, mentions, 0, False)  # type: ignore[arg-type]

    names = [
        name("conf", "module", 0),
        name("contract", "function", 92),
        name("ContractNotRespected", "exception", 67),
        name("Storage", "class", 5),
        name("MissingContract", "exception", 3),
    ]
    order = [names[i].name for i in prior_order(names)]
    assert order == ["ContractNotRespected", "MissingContract", "contract", "Storage", "conf"]
    import dataclasses

    from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config
    from repo2lora.hypernet.names import NamesHypernet
    from repo2lora.hypernet.static import HypernetConfig

    info = describe_base_model("tiny-random")
    cfg = dataclasses.replace(
        default_hypernet_config(info), generator="code2lora-names", names_select="prior"
    )
    net = build_hypernet(HypernetConfig.from_json(cfg.to_json()), info)  # as a card reloads it
    assert isinstance(net, NamesHypernet) and net.names.select_by == "prior"


def test_name_tokens_weigh_more_in_the_loss_and_only_they() -> None:
    """`--name-weight`: the target tokens that spell a defined name (the closing token not)
    get the weight, and the weighted summed NLL is the plain one plus (weight - 1) times the
    NLL of exactly those tokens."""
    from repo2lora.training.shared import name_token_weights, tokenize_batch

    loaded = load_base_model(describe_base_model("tiny-random"))
    tok = loaded.tokenizer
    examples = [
        TaskExample("r", "with pytest.raises(", "ContractError"),
        TaskExample("r", "x = ", "build(ContractError, 3)"),
        TaskExample("r", "y = ", "other_call(2)"),
    ]
    cfg = TrainConfig(generator="code2lora-names", name_weight=3.0)
    batch = tokenize_batch(tok, examples, cfg)
    labels = batch["labels"]
    defined = [{"ContractError"}, {"ContractError"}, {"ContractError"}]
    w = name_token_weights(tok, examples, defined, labels, cfg)
    assert torch.equal(w[labels == -100], torch.ones(int((labels == -100).sum())))
    for i in range(len(examples)):
        pos = (labels[i] != -100).nonzero().flatten().tolist()
        heavy = "".join(tok.decode([int(labels[i, p])]) for p in pos if w[i, p] == 3.0)
        assert heavy.strip() == ("" if i == 2 else "ContractError")
    plain_cfg = TrainConfig(generator="code2lora-names")
    assert torch.equal(name_token_weights(tok, examples, defined, labels, plain_cfg), w * 0 + 1)
    args = (loaded.model, batch["input_ids"], batch["attention_mask"], labels)
    with torch.no_grad():
        plain = target_nll(*args) * batch["n_target"]
        weighted = target_nll(*args, w) * batch["n_target"]
        only = target_nll(*args, (w - 1) / 2) * batch["n_target"]  # the name tokens' NLL, summed
    torch.testing.assert_close(weighted, plain + 2 * only)
    assert float(only[2]) == 0.0 and float(only[0]) > 0


def test_where_the_code_uses_a_name_keys_its_first_token() -> None:
    """`--names-contexts`: the base model's state before a name's uses in the code is a key of
    its first token, so of two names the one the code raises gains more after `raise` and the
    one it instantiates more after `t =` (keys only: a hand-set gain, no training)."""
    import dataclasses

    from repo2lora.hypernet.checkpoint import build_hypernet, default_hypernet_config
    from repo2lora.hypernet.names import NamesHypernet
    from repo_encoder.names import RepoName

    base = load_base_model(describe_base_model(None))
    cfg = dataclasses.replace(
        default_hypernet_config(base.info),
        generator="code2lora-names",
        names_select="prior",
        names_contexts=4,
    )
    net = build_hypernet(cfg, base.info)
    assert isinstance(net, NamesHypernet)
    with torch.no_grad():
        net.names.gain.fill_(0.1)
    names = [
        RepoName("QuuxFault", "exception", 1, 1, 3, 0, False),
        RepoName("ZorbTable", "class", 1, 1, 3, 0, False),
    ]
    texts = [
        "def load(path):\n    if not path:\n        raise QuuxFault('empty')\n",
        "def check(rows):\n    for row in rows:\n        if row is None:\n"
        "            raise QuuxFault(row)\n",
        "def build(path):\n    table = ZorbTable(path)\n    return table\n",
        "def rows(path):\n    t = ZorbTable.open(path)\n    return list(t)\n",
    ]
    tok = base.tokenizer
    probe = NameProbe(base.model, tok, cfg.names_tokens)
    first = {n.name: probe.spellings(n.name)[-1][0] for n in names}  # ` Name`'s first token

    def gains(prompt: str, texts: list[str]) -> float:
        """What the pair adds to QuuxFault's first token minus ZorbTable's after `prompt`."""
        with torch.no_grad():
            a, b = net.names_pair(NameInput(names, probe, texts))
            ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
            h = base.model.get_decoder()(input_ids=ids).last_hidden_state[0, -1]
            delta = net.scaling * (b @ (a @ h))
        return float(delta[first["QuuxFault"]] - delta[first["ZorbTable"]])

    raise_at = "def save(item):\n    if item is None:\n        raise"
    build_at = "def make(path):\n    t ="
    assert gains(raise_at, []) == gains(build_at, []) == 0  # no uses read: no first-token key
    assert gains(raise_at, texts) > 0 > gains(build_at, texts)
