"""The rules a reply's text is checked against (`safety` in the config and the policy file).

Each rule has a name and answers for the text of a reply so far: nothing (the text passes),
`hold` (the text may yet pass or fail; audio waits), or `block` (the reply must stop). `final`
says the text is complete. The built-in rules:

- `terms`: words or phrases, case-insensitive, as whole words (a phrase matches with any
  whitespace between its words), so "ass" does not block "class";
- `regex`: a regular expression (Python's `re`, case-insensitive unless it says otherwise);
- `personal_data`: phone numbers, e-mail addresses, payment card numbers (Luhn-checked) and
  street addresses in the configured locale (`satellite.safety.personal`);
- `topics`: allow-only topics for shared spaces: a reply must name one of the topics' words;
  until it does its audio waits, and a reply that ends without one is blocked.

Rules judge what the model writes; numbers it spells out in words are not digits and pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from satellite.safety import personal

Verdict = Literal["hold", "block"]

EXCERPT_CHARS = 40
"""Longest excerpt of a blocked reply kept for the report and MQTT (around the match)."""


@dataclass(frozen=True)
class Finding:
    """What a rule says about the text so far, when it is not a plain pass."""

    rule: str
    verdict: Verdict
    excerpt: str = ""
    """The text around the match, at most EXCERPT_CHARS, with personal data masked."""


class Rule(Protocol):
    name: str

    def check(self, text: str, final: bool) -> Finding | None: ...


def excerpt_around(text: str, start: int, end: int, mask: str | None = None) -> str:
    """The match and some text around it, at most EXCERPT_CHARS; `mask` replaces the match."""
    middle = mask if mask is not None else text[start:end][:EXCERPT_CHARS]
    room = max(0, EXCERPT_CHARS - len(middle))
    before = text[max(0, start - room // 2) : start]
    after = text[end : end + room - len(before)]
    return " ".join(f"{before}{middle}{after}".split())


def whole_words(term: str) -> str:
    """A term as a pattern matching it as whole words, any whitespace between its words."""
    return r"(?<!\w)" + r"\s+".join(re.escape(w) for w in term.split()) + r"(?!\w)"


class TermsRule:
    """Blocked words or phrases (see the module docstring)."""

    def __init__(self, name: str, terms: Sequence[str]) -> None:
        self.name = name
        words = [t.strip() for t in terms if t.strip()]
        self.pattern = (
            re.compile("|".join(whole_words(w) for w in words), re.IGNORECASE) if words else None
        )

    def check(self, text: str, final: bool) -> Finding | None:
        if self.pattern is None or (match := self.pattern.search(text)) is None:
            return None
        return Finding(self.name, "block", excerpt_around(text, match.start(), match.end()))


class RegexRule:
    """A regular expression that must not match the reply's text."""

    def __init__(self, name: str, pattern: str) -> None:
        self.name = name
        self.pattern = re.compile(pattern, re.IGNORECASE)

    def check(self, text: str, final: bool) -> Finding | None:
        if (match := self.pattern.search(text)) is None:
            return None
        return Finding(self.name, "block", excerpt_around(text, match.start(), match.end()))


class PersonalDataRule:
    """Personal data of the kinds asked for, in the locale's forms; the excerpt masks it."""

    def __init__(self, name: str, kinds: Sequence[str], locale: str) -> None:
        self.name = name
        self.finders = personal.finders(kinds, locale)

    def check(self, text: str, final: bool) -> Finding | None:
        for kind, find in self.finders:
            if (span := find(text)) is not None:
                return Finding(self.name, "block", excerpt_around(text, *span, mask=f"[{kind}]"))
        return None


class TopicsRule:
    """Allow-only topics: the reply must name one of the topics' words (whole words, any case)."""

    def __init__(self, name: str, topics: Mapping[str, Sequence[str]]) -> None:
        self.name = name
        words = [w for ws in topics.values() for w in ws if w.strip()]
        self.topics = sorted(topics)
        self.pattern = re.compile("|".join(whole_words(w) for w in words), re.IGNORECASE)

    def check(self, text: str, final: bool) -> Finding | None:
        if self.pattern.search(text):
            return None
        if not final:
            return Finding(self.name, "hold")
        return Finding(self.name, "block", f"no allowed topic ({', '.join(self.topics)}) in: "
                       f"{' '.join(text.split())[:EXCERPT_CHARS]}")  # fmt: skip
