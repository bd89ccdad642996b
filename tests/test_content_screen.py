"""The RE2 screen may only rule out patterns that cannot match: never one that does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.content_quoting import prepare
from policies.content_rules import load_rules
from policies.content_screen import Untranslatable, widen
from policies.text import decoded_subject, visible_text
from relay.parsing import parse

REPO = Path(__file__).resolve().parents[1]
RULES = load_rules(REPO / "conf" / "content_rules.toml")
PATTERNS = [p for r in (*RULES.rules, *RULES.critical_rules) for p in r.patterns]
CORPUS = REPO.parent / "shared" / "corpus" / "content"


def assert_superset(text: str) -> None:
    maybe = RULES.candidates(text)
    missed = [p.pattern for p in PATTERNS if p.search(text) and p not in maybe]
    assert missed == []


@pytest.mark.parametrize(("pattern", "widened"), [
    (r"\bfoo\b", "foo"),
    (r"\w+@\w+", r"[\p{L}\p{N}_]+@[\p{L}\p{N}_]+"),
    (r"[\w.-]+", r"[\p{L}\p{N}_.-]+"),
    (r"a(?!b)c", "ac"),
    (r"(?<![\d-])\d{3}", r"\p{Nd}{3}"),
    (r"^x$", "x"),
    (r"[^\]]x", r"[^\]]x"),
    (r"\W", r"[\s\S]"),
])
def test_widen(pattern, widened):
    assert widen(pattern) == widened


@pytest.mark.parametrize("pattern", [r"(a)\1", r"[\W]", "\\"])
def test_untranslatable_patterns_are_left_to_python(pattern):
    with pytest.raises(Untranslatable):
        widen(pattern)


def test_every_rule_pattern_is_screened():
    assert RULES.screen is not None and RULES.screen._set is not None


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not found beside the repository")
def test_screen_never_hides_a_match_in_the_corpus():
    for eml in sorted(CORPUS.glob("*.eml")):
        msg = parse(eml.read_bytes())
        for is_reply in (False, True):
            assert_superset(prepare(decoded_subject(msg), visible_text(msg), is_reply=is_reply))


# words the rules are made of, so random texts hit many patterns
WORDS = sorted({w for p in PATTERNS for w in __import__("re").findall(r"[a-zäöüéèñç']{3,}",
                                                                        p.pattern)})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(
    [" ", "  ", "\n", ", ", ". ", "!", "'", "-", "20%", "SAVE20", "£5", "07700 900123",
     "x@gmail.com", "www.shop.example", "ÄÖÜ", "ß", "İ", "ſ", "K"])), max_size=40))
def test_screen_never_hides_a_match_in_random_texts(parts):
    text = " ".join(parts)
    assert_superset(text)
    assert_superset(text.upper())
