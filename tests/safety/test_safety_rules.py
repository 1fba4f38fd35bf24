"""The built-in safety rules on texts a reply could hold: blocked terms as whole words,
regular expressions, personal data in three locales (with cases that must not match), and
allow-only topics; excerpts are short and mask personal data."""

from __future__ import annotations

import pytest

from satellite.safety.personal import finders, luhn_ok
from satellite.safety.rules import (
    EXCERPT_CHARS,
    PersonalDataRule,
    RegexRule,
    TermsRule,
    TopicsRule,
)


def test_terms_match_whole_words_in_any_case() -> None:
    rule = TermsRule("t", ["darn", "pick  up line"])
    assert rule.check("Well, DARN it.", False) is not None
    assert rule.check("a Pick\nUp   line", False) is not None
    assert rule.check("darning socks", False) is None
    assert TermsRule("t", ["ass"]).check("a class act", False) is None
    assert TermsRule("t", ["a.b"]).check("axb", False) is None, "terms are not patterns"
    assert TermsRule("t", ["  "]).check("anything", True) is None


def test_regex_is_case_insensitive() -> None:
    rule = RegexRule("secrets", r"password\s+is\s+\S+")
    found = rule.check("The PASSWORD is hunter2, ok", False)
    assert found is not None and found.rule == "secrets" and found.verdict == "block"
    assert "PASSWORD is hunter2" in found.excerpt
    assert rule.check("no secrets here", True) is None


PERSONAL = {
    "en_US": {
        "phone": [
            "Call (555) 123-4567 now",
            "it's 555-123-4567.",
            "+1 555 123 4567",
            "+49 30 1234567",
        ],
        "email": ["write jane.doe+x@example.co.uk today"],
        "card": ["card 4111 1111 1111 1111 ok", "4012888888881881"],
        "address": ["I live at 1600 Pennsylvania Avenue", "42 Elm St."],
    },
    "en_GB": {
        "phone": ["ring 020 7946 0958", "mobile 07700 900123"],
        "address": ["221B Baker Street", "10 Downing St"],
    },
    "de_DE": {
        "phone": ["Ruf 030 1234567 an", "Handy 0151 23456789"],
        "address": ["Hauptstraße 5 in Berlin", "Lindenallee 12a"],
    },
}
HARMLESS = [
    "It is 72 degrees and 1234567 people live there",
    "The year 2024 had 365 days",
    "order 1234567890123 shipped",  # 13 digits, fails the Luhn check
    "set a timer for 10 minutes at 10:30 pm",
    "turn on the lights in the kitchen",
    "call five five five one two three four",  # spelled out: not caught (documented)
    "the 3 bears",
]


@pytest.mark.parametrize("locale", sorted(PERSONAL))
def test_personal_data_in_each_locale(locale: str) -> None:
    for kind, texts in PERSONAL[locale].items():
        (find,) = [f for k, f in finders([kind], locale)]
        for text in texts:
            assert find(text) is not None, (locale, kind, text)
    rule = PersonalDataRule("pd", ["phone", "email", "card", "address"], locale)
    for text in HARMLESS:
        assert rule.check(text, True) is None, (locale, text)


def test_personal_data_is_masked_in_the_excerpt() -> None:
    rule = PersonalDataRule("pd", ["phone", "email", "card", "address"], "en_US")
    found = rule.check("Sure! You can reach Jane at jane@example.com any day.", False)
    assert found is not None and "[email]" in found.excerpt and "jane@" not in found.excerpt
    assert len(found.excerpt) <= EXCERPT_CHARS


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_unknown_kind_or_locale_is_named() -> None:
    with pytest.raises(ValueError, match="'passport'"):
        finders(["passport"], "en_US")
    with pytest.raises(ValueError, match="'fr_FR'"):
        finders(["phone"], "fr_FR")


def test_allow_only_topics_hold_until_a_topic_then_pass() -> None:
    rule = TopicsRule("shared", {"lights": ["light", "lamp"], "weather": ["rain", "weather"]})
    assert rule.check("", False) is not None and rule.check("", False).verdict == "hold"  # type: ignore[union-attr]
    assert rule.check("Sure, the", False).verdict == "hold"  # type: ignore[union-attr]
    assert rule.check("Sure, the lamp is on", False) is None
    ended = rule.check("Let me tell you a story.", True)
    assert ended is not None and ended.verdict == "block" and "lights, weather" in ended.excerpt


def test_excerpts_stay_short() -> None:
    text = "x " * 200 + "darn " + "y " * 200
    found = TermsRule("t", ["darn"]).check(text, False)
    assert found is not None and len(found.excerpt) <= EXCERPT_CHARS and "darn" in found.excerpt
