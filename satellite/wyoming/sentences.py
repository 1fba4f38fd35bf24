"""Text to speech in pieces: whole sentences out of streamed text, and long sentences cut to a
size one model turn speaks well.

A sentence ends at `.`, `!`, `?`, `;`, `:` or a line break, followed by white space (so "3.5" or
"e.g.x" do not end one); what follows the last end stays in the buffer until more text comes
or the stream ends.
"""

from __future__ import annotations

import re

MAX_PIECE = 300
"""Longest piece in characters spoken in one model turn; longer sentences are cut at a space
(or, with none, anywhere)."""

_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+|\n+")


def split_complete(buffer: str) -> tuple[list[str], str]:
    """The complete sentences in `buffer` (stripped, none empty) and the rest."""
    sentences: list[str] = []
    start = 0
    for match in _END.finditer(buffer):
        piece = buffer[start : match.start()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    return sentences, buffer[start:]


def pieces(text: str, limit: int = MAX_PIECE) -> list[str]:
    """`text` as sentences of at most `limit` characters, in order."""
    sentences, rest = split_complete(text)
    if rest.strip():
        sentences.append(rest.strip())
    out: list[str] = []
    for sentence in sentences:
        while len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            out.append(sentence)
    return out
