"""Streaming text of generated token ids: each token's new text as soon as it is complete.

A byte-level tokenizer can split one character over several tokens, and some decoders treat
a token differently at the start of a string (a leading space), so each piece is the
difference between decoding a short window ending at the new token and the same window without
it; a piece that ends in an incomplete character (U+FFFD) is held back until the next token
completes it. Special tokens decode to nothing.
"""

from __future__ import annotations

import unicodedata
from typing import Any

REPLACEMENT = "\ufffd"


def printable(text: str, *, one_line: bool) -> str:
    """Generated text made safe for a terminal: control characters (escape sequences
    included) become U+FFFD; with `one_line`, every run of whitespace becomes one space."""
    if one_line:
        text = " ".join(text.split())
    return "".join(c if c == "\n" or unicodedata.category(c) != "Cc" else "\ufffd" for c in text)


class TextStream:
    """Turns token ids into text pieces; `tokenizer` is a `tokenizers.Tokenizer` or None
    (then every piece is empty)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""

    def push(self, token: int) -> str:
        """The text `token` completes (maybe empty)."""
        if self.tokenizer is None:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    def text(self) -> str:
        """Everything decoded so far."""
        return self._decode(self.ids) if self.tokenizer is not None else ""
