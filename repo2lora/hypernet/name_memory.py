"""The names memory of code2lora-names: a repository's public names -> one LoRA pair on the LM
head that raises those names' tokens where they fit. It is an associative memory written as a
LoRA, dW = B A with B [vocab, R] and A [R, hidden]:

* values: column i of B is the one-hot of a token v_i, so slot i raises exactly v_i's logit.
* entries: for every name held and each of its spellings (bare `Name`, and ` Name` when the
  tokenizer gives that another first token), entry 0 raises the first token t_0 and entry j
  raises t_j once t_0 .. t_{j-1} are written.
* keys, in the space of the last hidden state h that the LM head reads:
    entry 0: g_kind + W_0(e(t_0)): a learned "a name of this kind fits here" direction (one per
             kind: an exception after `raises(`, a function after `module.`), plus a learned
             map of the base model's own (normalised) LM-head row of t_0; with `contexts` K,
             plus W_u(u_n): u_n is the mean of the base model's own last hidden states where
             the snapshot's code then writes the name (before its first K uses,
             `repo_encoder.names.mention_contexts`), centred on the names held, so the name
             rises where the code has used it (`raise` -> its exception, `t =` -> its class):
             a kNN-LM entry of the repository written into the head, weighted per kind
             (module names, used in every import, start at zero);
    entry j: W_1(h(t_0 .. t_{j-1})) + W_2(e(t_{j-1})) + W_3(e(t_{j-2})) + c + g'_kind: a map
             of the base model's own (normalised) last hidden state after reading
             "\\n" t_0 .. t_{j-1} (the state it is in while writing the name; centred on the
             mean of this memory's states, and W_1 starts as the identity, so a matching state
             raises the next token from the first training step), plus learned maps of the
             LM-head rows of the last two tokens written, a learned bias, and a second
             direction per kind (names that start alike part ways by what the context asks).
  W(x) = a x + U (V^T x), with U, V [hidden, key_rank] and a scalar a.
* scores: s_n = sigmoid(MLP(features of name n)): its kind, how often it is defined and
  mentioned, where in the tree it lives, its shape. Every entry of a name carries its score.
* bounds: keys are shrunk below unit norm and the pair's gain is max_boost * tanh(g) / |h|,
  with |h| the norm of a typical last hidden state of the base model (`NameProbe.scale`), so
  one entry adds at most about `names_max_boost` nats to a logit: without a bound, training on
  a few repositories drives the boosts to tens of nats, and a wrong name then costs that much.
* A's row for token v sums s_n * key over the entries whose value is v, so the rank is the
  number of distinct tokens raised, plus one: the last slot stops a name once it is written.
  Its B column holds every raised token, and its A row is -k * sum of s_n * key(spelling)
  over the names' whole spellings (the entry-j key of the full name), so after a complete name
  its tokens are lowered about as much
  as a matching prefix raises them (k learned, starting at 1): without it a name's last token
  keeps raising itself ("ErrorErrorError"). Names are taken by score, best first, while their
  distinct tokens fit in R - 1 (`names_rank` - 1), up to `names_max` names.

The gain starts at zero (g = 0), so an untrained memory leaves the model as it is. So
dlogit(v | h) = gain * sum over entries e -> v of s_e (key_e . h): zero
prompt tokens, a plain LoRA on the head. The base model is only read, through a `NameProbe`
(its tokenizer, LM-head rows and hidden states on the names' spellings); it is never trained
and never a submodule."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from repo2lora.adapters.targets import LoraTarget
from repo_encoder.chunk import DefinitionKind
from repo_encoder.names import RepoName, mention_contexts

KINDS: tuple[DefinitionKind, ...] = (
    "module",
    "class",
    "exception",
    "function",
    "method",
    "constant",
)
N_FEATURES = len(KINDS) + 10
_SCALE_SNIPPET = "def total(values):\n    result = 0\n    for v in values:\n        result += v\n"
_SCAN = 4  # names looked at per name held, at most (tokenizing is the cost)
CONTEXT_TOKENS = 48  # of code read before a mention
# the context key's starting weight: the centred state is short (|x| ~ 0.3-0.6), and a weight
# of 3 gave the untrained keys their best name tasks in a hand sweep (diagnostic, not shipped)
_WHERE_A = 3.0

# (the tokens written before it, the token it raises); () before the first token
Entry = tuple[tuple[int, ...], int]


def name_features(names: Sequence[RepoName]) -> torch.Tensor:
    """What a name's score reads [n, N_FEATURES]: kind (one-hot), how often it is defined,
    in how many files, in how many chunks it is mentioned (log), its depth in the tree, whether
    a package's __init__ defines it, its length, and its shape (UPPER, Capitalised, has "_",
    has a digit)."""
    rows = [_feature_row(n) for n in names]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(names), N_FEATURES)


@functools.lru_cache(maxsize=1 << 16)  # a repository's names barely change between commits
def _feature_row(n: RepoName) -> tuple[float, ...]:
    word = n.name
    return (
        *(1.0 if n.kind == k else 0.0 for k in KINDS),
        math.log1p(n.definitions),
        math.log1p(n.files),
        math.log1p(n.mentions),
        min(n.depth, 8) / 4,
        float(n.in_init),
        min(len(word), 48) / 16,
        float(word.isupper()),
        float(word[:1].isupper() and not word.isupper()),
        float("_" in word),
        float(any(ch.isdigit() for ch in word)),
    )


class NameProbe:
    """What the names memory reads of the frozen base model: a name's spellings as token ids,
    the normalised LM-head rows of tokens, and the normalised last hidden states after reading
    a spelling's prefixes. Spellings and states are cached (names repeat across commits)."""

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int, cache_size: int = 200_000):
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.cache_size = cache_size
        self.context = tuple(self._ids("\n"))
        self._scale: float | None = None
        self._entries: dict[str, tuple[tuple[tuple[int, ...], ...], list[Entry]]] = {}
        self._states: dict[tuple[int, ...], torch.Tensor] = {}
        self._contexts: dict[str, torch.Tensor] = {}

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def spellings(self, name: str) -> tuple[tuple[int, ...], ...]:
        """The token ids of `name` bare and, when the tokenizer starts that differently with
        a real token (not bare whitespace), after a space; each cut to `max_tokens`."""
        return self._lookup(name)[0]

    def entries(self, name: str) -> list[Entry]:
        """The name's entries (see the module docstring), without repeats."""
        return self._lookup(name)[1]

    def prepare(self, names: Sequence[str]) -> None:
        """Tokenize the names not seen yet in one batch (the fast tokenizers batch in Rust)."""
        todo = [n for n in dict.fromkeys(names) if n not in self._entries]
        if not todo:
            return
        ids = self.tokenizer([*todo, *(" " + n for n in todo)], add_special_tokens=False)[
            "input_ids"
        ]
        for i, name in enumerate(todo):
            self._remember(name, ids[i], ids[len(todo) + i])

    def _lookup(self, name: str) -> tuple[tuple[tuple[int, ...], ...], list[Entry]]:
        hit = self._entries.get(name)
        if hit is None:
            hit = self._remember(name, self._ids(name), self._ids(" " + name))
        return hit

    def _remember(
        self, name: str, bare_ids: Sequence[int], spaced_ids: Sequence[int]
    ) -> tuple[tuple[tuple[int, ...], ...], list[Entry]]:
        bare = tuple(bare_ids[: self.max_tokens])
        spaced = tuple(spaced_ids[: self.max_tokens])
        spellings = [bare] if bare else []
        own_start = spaced and (not bare or spaced[0] != bare[0])
        if own_start and self.tokenizer.decode([spaced[0]]).strip():
            spellings.append(spaced)
        entries = list(dict.fromkeys((sp[:j], sp[j]) for sp in spellings for j in range(len(sp))))
        if len(self._entries) >= self.cache_size:
            self._entries.clear()
        hit = self._entries[name] = (tuple(spellings), entries)
        return hit

    @property
    def scale(self) -> float:
        """The norm of a typical last hidden state of the base model: the mean over a fixed
        snippet of code (measured once; a function of the model only)."""
        if self._scale is None:
            with torch.no_grad():
                model = self.model
                device = model.get_input_embeddings().weight.device
                ids = torch.tensor([self._ids(_SCALE_SNIPPET)], device=device)
                backbone = model.get_decoder() if hasattr(model, "get_decoder") else model
                hidden = backbone(input_ids=ids).last_hidden_state.float()  # [1, t, d]
                self._scale = float(hidden.norm(dim=-1).mean().clamp(min=1e-6))
        return self._scale

    @torch.no_grad()
    def head_rows(self, ids: Sequence[int]) -> torch.Tensor:
        """Normalised LM-head rows of `ids` [n, hidden] (float32, CPU)."""
        weight = self.model.get_output_embeddings().weight
        rows = weight[torch.tensor(list(ids), dtype=torch.long, device=weight.device)]
        return nn.functional.normalize(rows.float(), dim=-1).cpu()

    @torch.no_grad()
    def states(self, prefixes: Sequence[tuple[int, ...]], names: Sequence[str]) -> torch.Tensor:
        """Normalised last hidden states [n, hidden] (float32, CPU) after reading "\\n" and
        each prefix, which must be a (non-empty, possibly whole) prefix of a spelling of one of
        `names` (whose spellings are read in one batch when any prefix is missing)."""
        missing = [p for p in prefixes if p not in self._states]
        if missing:
            if len(self._states) >= self.cache_size:
                self._states.clear()
            wanted = set(missing)
            todo = [
                sp
                for n in dict.fromkeys(names)
                for sp in self.spellings(n)
                if any(sp[:j] in wanted for j in range(1, len(sp) + 1))
            ]
            self._read(todo)
        return torch.stack([self._states[p] for p in prefixes]) if prefixes else torch.zeros(0)

    @torch.no_grad()
    def context_states(self, contexts: Sequence[str], tokens: int) -> torch.Tensor:
        """Normalised last hidden states [n, hidden] (float32, CPU) after reading each context's
        last `tokens` tokens: the state the base model is in where the code then writes a name.
        Cached by context (an unchanged chunk's contexts are read once)."""
        todo = list(dict.fromkeys(c for c in contexts if c not in self._contexts))
        if todo:
            if len(self._contexts) + len(todo) > self.cache_size:
                self._contexts.clear()
            model = self.model
            device = model.get_input_embeddings().weight.device
            backbone = model.get_decoder() if hasattr(model, "get_decoder") else model
            ids = [x[-tokens:] for x in self.tokenizer(todo, add_special_tokens=False)["input_ids"]]
            for s in range(0, len(ids), 64):
                rows = ids[s : s + 64]
                width = max(len(r) for r in rows)
                x = torch.zeros((len(rows), width), dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):  # left-padded: every context ends at the last column
                    x[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                    mask[i, width - len(r) :] = 1
                position = (mask.cumsum(-1) - 1).clamp(min=0)
                out = backbone(
                    input_ids=x.to(device),
                    attention_mask=mask.to(device),
                    position_ids=position.to(device),
                )
                last = nn.functional.normalize(out.last_hidden_state[:, -1].float(), dim=-1).cpu()
                for i, c in enumerate(todo[s : s + 64]):
                    self._contexts[c] = last[i]
        return torch.stack([self._contexts[c] for c in contexts]) if contexts else torch.zeros(0)

    def _read(self, spellings: list[tuple[int, ...]]) -> None:
        """One forward pass of the base model over "\\n" + each spelling (right-padded)."""
        if not spellings:
            return
        model = self.model
        device = model.get_input_embeddings().weight.device
        ctx = self.context
        width = len(ctx) + max(len(sp) for sp in spellings)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(spellings), width), pad, dtype=torch.long)
        mask = torch.zeros((len(spellings), width), dtype=torch.long)
        for i, sp in enumerate(spellings):
            seq = ctx + sp
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        backbone = model.get_decoder() if hasattr(model, "get_decoder") else model
        out = backbone(input_ids=ids.to(device), attention_mask=mask.to(device))
        hidden = nn.functional.normalize(out.last_hidden_state.float(), dim=-1).cpu()  # [b,t,d]
        for i, sp in enumerate(spellings):
            for j in range(1, len(sp) + 1):
                self._states[sp[:j]] = hidden[i, len(ctx) + j - 1]


@dataclass(frozen=True)
class NameInput:
    """What a names memory reads for one repository: its names, the base model's probe and
    the snapshot's chunk texts (where a memory with `contexts` reads how the code uses its
    names; a memory without ignores them, so callers that have them at hand pass them)."""

    names: list[RepoName]
    probe: NameProbe
    texts: Sequence[str] = ()


@dataclass
class NameSelection:
    """The names a memory holds for one repository, best first, their entries, and the token
    each slot of the LoRA pair raises (slot order)."""

    names: list[RepoName]
    entries: list[list[Entry]]
    values: list[int]


# A scalar parameter is read as this multiple of itself, so that Adam, whose steps are about
# `lr` in every parameter, moves a scalar that must reach ~1 as fast as a vector whose entries
# must reach ~1/sqrt(hidden)
_SCALAR_RATE = 10.0


class _KeyMap(nn.Module):
    """W(x) = a x + U (V^T x) (+ bias), starting at a x."""

    def __init__(self, dim: int, rank: int, bias: bool, a: float = 0.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.full((), a / _SCALAR_RATE))
        self.u = nn.Parameter(torch.randn(dim, rank) / math.sqrt(dim))
        self.v = nn.Parameter(torch.zeros(dim, rank))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, d] -> [n, d]
        out = _SCALAR_RATE * self.a * x + (x @ self.v) @ self.u.T
        return out + self.bias if self.bias is not None else out


def prior_order(names: Sequence[RepoName]) -> list[int]:
    """Indices of `names` by a fixed prior: exceptions first (a test's `raises(` asks for one,
    and a repository defines few), then by how many chunks mention the name, how often it is
    defined, and the name itself (a stable order)."""
    return sorted(
        range(len(names)),
        key=lambda i: (
            names[i].kind != "exception",
            -names[i].mentions,
            -names[i].definitions,
            names[i].name,
        ),
    )


class NameMemory(nn.Module):
    """Learned parts of the names memory: the score MLP, the kind gates, the key maps, the stop
    slot's strength and the pair's gain (zero at first: an untrained memory changes nothing)."""

    def __init__(
        self,
        head: LoraTarget,
        rank: int,
        max_names: int,
        key_rank: int,
        max_boost: float,
        select_by: str = "score",
        contexts: int = 0,
    ) -> None:
        super().__init__()
        self.head = head
        self.select_by = select_by
        self.contexts = contexts
        self.rank = rank
        self.max_names = max_names
        self.max_boost = max_boost
        d = head.in_features
        self.score = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.GELU(), nn.Linear(32, 1))
        self.gate = nn.Parameter(torch.zeros(len(KINDS), d))
        # the kind's context matters all along the name: two names that share a start (Quota-,
        # Quiver-) part ways by what the context asks for (an exception after `raises(`)
        self.then_gate = nn.Parameter(torch.zeros(len(KINDS), d))
        self.first = _KeyMap(d, key_rank, bias=False)
        # starts as the identity: a prefix's state, centred, is its key (a matching state raises
        # the next token from the first step on)
        self.then = _KeyMap(d, key_rank, bias=True, a=1.0)
        self.last = _KeyMap(d, key_rank, bias=False)
        self.prev = _KeyMap(d, key_rank, bias=False)
        self.stop = nn.Parameter(torch.full((), 1 / _SCALAR_RATE))
        if contexts > 0:
            # where the code uses a name: the base model's own state before its mentions,
            # centred, is a key of its first token (a kNN-LM entry written into the head)
            self.where = _KeyMap(d, key_rank, bias=False, a=_WHERE_A)
            # and how much each kind trusts its uses: a module name is used everywhere (every
            # import, every `pkg.` prefix), so its uses start off (held out, raising module
            # names wherever they were used cost 3.4 pp overall)
            start = [0.0 if k == "module" else 1.0 for k in KINDS]
            self.where_kind = nn.Parameter(torch.tensor(start) / _SCALAR_RATE)
        # the whole pair's gain starts at zero: an untrained memory leaves the model as it is
        self.gain = nn.Parameter(torch.zeros(()))

    def scores(self, names: Sequence[RepoName]) -> torch.Tensor:
        """s_n for each name [n] (positive)."""
        x = name_features(names).to(self.gate.device)
        return torch.sigmoid(self.score(x).squeeze(-1))

    @torch.no_grad()
    def select(self, names: Sequence[RepoName], probe: NameProbe) -> NameSelection:
        """The names held, in `select_by` order (best learned score first, or `prior_order`),
        while their distinct tokens fit the rank."""
        sel = NameSelection([], [], [])
        if not names:
            return sel
        if self.select_by == "prior":
            order = prior_order(names)
        else:
            order = torch.argsort(self.scores(names).cpu(), descending=True, stable=True).tolist()
        order = order[: _SCAN * self.max_names]
        probe.prepare([names[i].name for i in order])
        slots: set[int] = set()
        for i in order:
            entries = probe.entries(names[i].name)
            new = list(dict.fromkeys(v for _, v in entries if v not in slots))
            if not entries or len(slots) + len(new) > self.rank - 1:  # the last slot stops
                continue
            sel.names.append(names[i])
            sel.entries.append(entries)
            sel.values += new
            slots.update(new)
            if len(sel.names) >= self.max_names:
                break
        return sel

    def used_where(
        self, sel: NameSelection, probe: NameProbe, texts: Sequence[str]
    ) -> torch.Tensor:
        """Per name held [c, hidden]: the mean of the base model's states before its first
        `contexts` mentions in `texts`, centred on the mean over the names that have any (a
        name without a mention: zero)."""
        d = self.head.in_features
        out = torch.zeros(len(sel.names), d)
        if self.contexts <= 0 or not texts or not sel.names:
            return out.to(self.gate.device)
        # in a canonical order: a commit's texts read afresh or moved by diffs pick the same uses
        used = mention_contexts(sorted(texts), [n.name for n in sel.names], self.contexts)
        flat = [c for n in sel.names for c in used.get(n.name, [])]
        states = probe.context_states(flat, CONTEXT_TOKENS)
        has = torch.zeros(len(sel.names), dtype=torch.bool)
        at = 0
        for i, n in enumerate(sel.names):
            k = len(used.get(n.name, []))
            if k:
                out[i] = states[at : at + k].mean(0)
                has[i] = True
            at += k
        if has.any():
            out[has] -= out[has].mean(0)
        return out.to(self.gate.device)

    def pair(
        self, sel: NameSelection, probe: NameProbe, texts: Sequence[str] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The LoRA pair of a selection: A [R, hidden] (differentiable in the memory's
        parameters) and B [vocab, R] (one-hot columns); `texts`, the snapshot's chunk texts,
        are read for where the names are used (with `contexts`)."""
        device = self.gate.device
        d, vocab, r = self.head.in_features, self.head.out_features, self.rank
        a = torch.zeros(r, d, device=device)
        b = torch.zeros(vocab, r, device=device)
        if not sel.names:
            return a, b
        slot_of = {v: i for i, v in enumerate(sel.values)}
        values = torch.tensor(sel.values, device=device)
        b[values, torch.arange(len(sel.values), device=device)] = 1
        b[values, r - 1] = 1  # the stop slot lowers every raised token
        s = self.scores(sel.names)  # [c]
        first: list[tuple[int, int, int]] = []  # (name, slot, token)
        then: list[tuple[int, int, tuple[int, ...]]] = []  # (name, slot, prefix)
        for n, entries in enumerate(sel.entries):
            for prefix, value in entries:
                if prefix:
                    then.append((n, slot_of[value], prefix))
                else:
                    first.append((n, slot_of[value], value))
        # the stop entries: each name's whole spellings, in the last slot
        for n, name in enumerate(sel.names):
            then += [(n, r - 1, sp) for sp in probe.spellings(name.name)]
        if first:
            rows = probe.head_rows([t for _, _, t in first]).to(device)  # [e0, d]
            kinds = torch.tensor([KINDS.index(sel.names[n].kind) for n, _, _ in first])
            keys = _bounded(self.gate[kinds.to(device)] + self.first(rows))
            if self.contexts > 0:
                # a name without uses has a zero row, which the map (no bias) keeps at zero
                where = self.used_where(sel, probe, texts)  # [c, d]
                own = torch.tensor([n for n, _, _ in first], device=device)
                trust = _SCALAR_RATE * self.where_kind[kinds.to(device)][:, None]
                keys = keys + trust * _bounded(self.where(where[own]))
            a = _write(a, first, s, keys)
        words = [sel.names[n].name for n, _, _ in then]
        states = probe.states([p for _, _, p in then], words).to(device)  # [e1, d]
        # centred on this memory's mean state: what every state shares matches any context
        states = states - states.mean(0)
        lasts = probe.head_rows([p[-1] for _, _, p in then]).to(device)  # [e1, d]
        # the token before it (a one-token prefix has none: the zero vector adds nothing)
        prevs = probe.head_rows([p[-2] if len(p) > 1 else 0 for _, _, p in then]).to(device)
        prevs = (
            prevs * torch.tensor([float(len(p) > 1) for _, _, p in then], device=device)[:, None]
        )
        sign = torch.tensor([-1.0 if slot == r - 1 else 1.0 for _, slot, _ in then], device=device)
        stop = torch.where(sign < 0, _SCALAR_RATE * self.stop, torch.ones((), device=device))
        kinds = torch.tensor([KINDS.index(sel.names[n].kind) for n, _, _ in then], device=device)
        keys = self.then(states) + self.last(lasts) + self.prev(prevs) + self.then_gate[kinds]
        a = _write(a, then, s, (sign * stop)[:, None] * _bounded(keys))
        gain = self.max_boost * torch.tanh(_SCALAR_RATE * self.gain) / probe.scale
        return gain * a, b


def _bounded(keys: torch.Tensor) -> torch.Tensor:
    """Keys [n, d] shrunk to norms below 1 (k / sqrt(1 + |k|^2): about unit when long, smooth
    at zero, where a unit normalisation's gradient would blow up)."""
    return keys / (1 + keys.pow(2).sum(-1, keepdim=True)).sqrt()


def _write(
    a: torch.Tensor, entries: Sequence[tuple[int, int, Any]], s: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """A [R, d] plus score * key of each (name, slot, _) entry in its slot's row."""
    names = torch.tensor([e[0] for e in entries], dtype=torch.long, device=a.device)
    slots = torch.tensor([e[1] for e in entries], dtype=torch.long, device=a.device)
    return a.index_add(0, slots, s[names][:, None] * keys)
