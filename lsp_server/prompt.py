"""What the model sees at a cursor and what the editor is shown: the prompt is the document text
before the cursor and nothing else (the repository's knowledge comes from the adapter, never
from prompt tokens); the raw continuation is trimmed to one line by bracket structure and loses
whatever the text after the cursor already says."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*$")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = set(_OPENERS.values())
# an overlap with the text after the cursor shorter than this is dropped only when it is made
# of these characters (auto-closed brackets and quotes), so "x = 1" before "1 + y" stays intact
_SHORT_OVERLAP = 3
_PUNCTUATION = set(")]}'\":;,")


@dataclass(frozen=True)
class Prompt:
    """The text around a cursor. Only `prefix` is given to the model; `suffix` is used to
    post-process the completion and to key the cache."""

    prefix: str
    suffix: str

    @property
    def line_prefix(self) -> str:
        """The cursor's line up to the cursor."""
        return self.prefix.rsplit("\n", 1)[-1]

    @property
    def line_suffix(self) -> str:
        """The cursor's line after the cursor."""
        return self.suffix.split("\n", 1)[0]

    @property
    def word(self) -> str:
        """The identifier characters just before the cursor (what a completion list filters by)."""
        m = _WORD_TAIL.search(self.line_prefix)
        return m.group() if m else ""


def prompt_at(text: str, offset: int) -> Prompt:
    """Split a document at a character offset (clamped to the document); line ends become
    "\n" on both sides."""
    offset = max(0, min(offset, len(text)))
    return Prompt(
        prefix=text[:offset].replace("\r\n", "\n"), suffix=text[offset:].replace("\r\n", "\n")
    )


def _cut_at_unbalanced_closer(text: str, line_prefix: str) -> str:
    """Cut `text` where it closes a bracket that neither it nor the line before the cursor
    opened: a single-line completion ends with the statement it is in."""
    stack: list[str] = []
    quote: str | None = None
    for ch in line_prefix:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch in _CLOSERS and stack and stack[-1] == ch:
            stack.pop()
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch in _CLOSERS:
            if not stack or stack[-1] != ch:
                return text[:i]
            stack.pop()
    return text


def _drop_suffix_overlap(text: str, line_suffix: str) -> str:
    """Remove the end of `text` that the rest of the line after the cursor already holds."""
    rest = line_suffix.strip()
    if not rest:
        return text
    for k in range(min(len(text), len(rest)), 0, -1):
        tail = rest[:k]
        if text.endswith(tail) and (k >= _SHORT_OVERLAP or set(tail) <= _PUNCTUATION):
            text = text[: len(text) - k]
            return text.rstrip() if line_suffix[:1].isspace() else text
    return text


def _next_line(suffix: str) -> str:
    for line in suffix.split("\n")[1:]:
        if line.strip():
            return line
    return ""


def postprocess(raw: str, prompt: Prompt, single_line: bool = True) -> str:
    """The completion to show for `raw` model output at `prompt` ("" for none)."""
    text = raw.replace("\r\n", "\n")
    head = ""
    if single_line:
        if not prompt.line_prefix.strip():  # at a blank line the model may start the next one
            head = text[: len(text) - len(text.lstrip("\n"))]
        body = text[len(head) :].split("\n", 1)[0]
        text = head + _cut_at_unbalanced_closer(body, "" if head else prompt.line_prefix)
    text = text.rstrip()
    if not text.strip():
        return ""
    if "\n" not in text:
        text = _drop_suffix_overlap(text, prompt.line_suffix)
        if not prompt.line_suffix.strip():
            line = (prompt.line_prefix + text).strip()
            if line and line == _next_line(prompt.suffix).strip():
                return ""  # the model copied the line below the cursor
    return text if text.strip() else ""
