"""The RE2 screen may only rule out patterns that cannot match: never one that does."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.content import evaluate
from policies.content_quoting import prepare
from policies.content_rules import load_rules
from policies.content_screen import _CASE_MISMATCH, Screen, Untranslatable, widen
from policies.text import decoded_subject, visible_text
from relay.parsing import parse

REPO = Path(__file__).resolve().parents[1]
RULES = load_rules(REPO / "conf" / "content_rules.toml")
PATTERNS = list(RULES.screen.patterns)  # rules, review request and detectors
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
    (r"[^\s<>]+", r"[^\s\p{Z}\x{85}\x{0b}\x{1c}-\x{1f}<>]+"),
    (r"[^.?!\d]{0,25}", r"[\s\S]{0,}"),  # RE2 knows more digits: a narrower negated set
    (r"\s*+x{0,63}+y++", r"[\s\p{Z}\x{85}\x{0b}\x{1c}-\x{1f}]*x{0,}y+"),
    (r"(?>ab|a)c", "(?:ab|a)c"),
    (r"a{,3}b{2}c{2,}d*?e??", "a{0,}b{2}c{2,}d*?e??"),
    (r"(?P<x>a)(?-i:B)", "(?P<x>a)(?-i:B)"),
    (r"[(?=x)]y", "[(?=x)]y"),
])
def test_widen(pattern, widened):
    assert widen(pattern) == widened


@pytest.mark.parametrize("pattern", [r"(a)\1", r"[\W]", "\\", "[a", "(?=a", "\u0130"])
def test_untranslatable_patterns_are_left_to_python(pattern):
    with pytest.raises(Untranslatable):
        widen(pattern)


def test_every_pattern_is_screened():
    assert RULES.screen is not None and RULES.screen.unscreened == ()


def test_equal_patterns_compiled_apart_are_both_screened():
    first = re.compile("instagram", re.IGNORECASE)
    re.purge()  # re.compile caches: this makes an equal pattern that is another object
    second = re.compile("instagram", re.IGNORECASE)
    assert first == second and first is not second
    screen = Screen([first, second])
    maybe = screen.candidates("follow us on Instagram")
    assert first in maybe and second in maybe
    maybe = screen.candidates("nothing here")
    assert first not in maybe and second not in maybe
    assert re.compile("never given") in maybe  # a pattern it does not know may match


def test_a_dotted_capital_i_hides_no_rule():
    # Python's re reads "İnstagram" as "instagram" when ignoring case; RE2 does not
    result = evaluate(RULES, "", "Follow us on İnstagram", is_reply=False)
    assert result.matches["off_platform.social_media"] == "İnstagram"


@pytest.mark.parametrize("text", ["İnstagram", "ınstagram", "café \udce9 instagram"])
def test_texts_re2_reads_differently_skip_the_screen(text):
    pattern = re.compile("instagram", re.IGNORECASE)
    assert pattern in Screen([pattern]).candidates(text)


# Every code point (but surrogates), and the cased ones: those with another case or fold.
ALL = "".join(map(chr, (*range(0xD800), *range(0xE000, sys.maxunicode + 1))))
CASED = "".join(c for c in ALL if c.lower() != c or c.upper() != c or c.casefold() != c)


def test_case_folding_differs_only_on_the_letters_the_screen_steps_aside_for():
    re2 = pytest.importorskip("re2")
    differ = set()
    for ch in CASED:
        if ch not in _CASE_MISMATCH:  # a pattern holding one is never screened
            literal = "(?i)" + re.escape(ch)
            differ |= set(re.findall(literal, CASED)) ^ set(re2.findall(widen(literal), CASED))
    assert differ <= set(_CASE_MISMATCH)


@pytest.mark.parametrize("pattern", [r"\w", r"\d", r"\s", r"[\w.+-]", r"(?i)[a-z0-9_+-]",
                                     r"[^\s<>]", r"(?i)[^a-z]", r"[^.?!\d]", r"(?i)[^.?!]", "."])
def test_widened_classes_match_every_character_python_does(pattern):
    re2 = pytest.importorskip("re2")
    flags = "(?i)" if pattern.startswith("(?i)") else ""
    runs = f"(?:{pattern.removeprefix(flags)})+"  # runs: a call per character takes minutes
    text = ALL.translate(dict.fromkeys(map(ord, _CASE_MISMATCH)))
    unmatched = re2.sub(flags + widen(runs), "", text)
    assert re.search(pattern, unmatched) is None


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not found beside the repository")
def test_screen_never_hides_a_match_in_the_corpus():
    for eml in sorted(CORPUS.glob("*.eml")):
        msg = parse(eml.read_bytes())
        for is_reply in (False, True):
            assert_superset(prepare(decoded_subject(msg), visible_text(msg), is_reply=is_reply))


# words the rules are made of, so random texts hit many patterns
WORDS = sorted({w for p in PATTERNS for w in re.findall(r"[a-zäöüéèñç']{3,}", p.pattern)})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(
    [" ", "  ", "\n", ", ", ". ", "!", "'", "-", "20%", "SAVE20", "£5", "07700 900123",
     "x@gmail.com", "www.shop.example", "ÄÖÜ", "ß", "İ", "ſ", "K"])), max_size=40))
def test_screen_never_hides_a_match_in_random_texts(parts):
    text = " ".join(parts)
    assert_superset(text)
    assert_superset(text.upper())
