"""Personal data in text, by kind and locale: phone numbers, e-mail addresses, payment card
numbers and street addresses, in the forms a reply would write them.

- `email`: name@domain.tld.
- `phone`: the locale's national forms (en_US `(555) 123-4567`, `555-123-4567`, `+1 555 123
  4567`; en_GB `020 7946 0958`, `07700 900123`; de_DE `030 1234567`, `0151 23456789`) and any
  international `+<country> ...` number of 8 to 15 digits.
- `card`: 13 to 19 digits, optionally in groups, that pass the Luhn check (so an order number
  or a long count is not taken for one).
- `address`: a house number and a street word in the locale's order (en_US/en_GB `221B Baker
  Street`, `10 Downing St`; de_DE `Hauptstraße 5`, `Am Markt 3a` is not caught: no street word).

The patterns are deliberately plain: they catch what a model writes out; digits spelled as
words ("five five five") are not caught.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

Span = tuple[int, int]
Finder = Callable[[str], Span | None]

KINDS = ("phone", "email", "card", "address")
LOCALES = ("en_US", "en_GB", "de_DE")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?!\w)")
_INTERNATIONAL = r"\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}"
_PHONES = {
    "en_US": r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}",
    "en_GB": r"(?:\+44\s?|0)(?:\d{2}\s?\d{4}\s?\d{4}|\d{3}\s?\d{3}\s?\d{4}|\d{4}\s?\d{6}|\d{4}\s?\d{3}\s?\d{3})",
    "de_DE": r"(?:\+49\s?|0)\d{2,4}[\s/-]?\d{3,8}(?:[\s-]?\d{1,5})?",
}
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_STREET_WORDS_EN = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    "terrace|close|crescent|square|sq|parkway|pkwy|highway|hwy"
)
_ADDRESSES = {
    "en_US": rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[A-Z][\w'-]*\s+){{1,3}}(?i:{_STREET_WORDS_EN})\b\.?",
    "en_GB": rf"\b\d{{1,4}}[A-Za-z]?\s+(?:[A-Z][\w'-]*\s+){{1,3}}(?i:{_STREET_WORDS_EN})\b\.?",
    "de_DE": r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm)\s+\d{1,4}[a-z]?\b",
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _regex_finder(pattern: str, flags: int = 0) -> Finder:
    compiled = re.compile(pattern, flags)

    def find(text: str) -> Span | None:
        match = compiled.search(text)
        return None if match is None else match.span()

    return find


def _phone_finder(locale: str) -> Finder:
    pattern = re.compile(rf"(?<![\w+]){_PHONES[locale]}(?!\d)|(?<![\w+]){_INTERNATIONAL}(?!\d)")

    def find(text: str) -> Span | None:
        for match in pattern.finditer(text):
            digits = re.sub(r"\D", "", match.group())
            if 7 <= len(digits) <= 15:
                return match.span()
        return None

    return find


def _card_finder(text: str) -> Span | None:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return match.span()
    return None


def finders(kinds: Sequence[str], locale: str) -> list[tuple[str, Finder]]:
    """(kind, finder) for each kind asked for, in the order of KINDS; ValueError names an
    unknown kind or locale."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown personal data kind {unknown[0]!r}; known: {', '.join(KINDS)}")
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}; known: {', '.join(LOCALES)}")
    table: dict[str, Finder] = {
        "phone": _phone_finder(locale),
        "email": _regex_finder(_EMAIL.pattern),
        "card": _card_finder,
        "address": _regex_finder(_ADDRESSES[locale]),
    }
    return [(kind, table[kind]) for kind in KINDS if kind in kinds]
