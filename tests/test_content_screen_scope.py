"""What each screen covers: the content screen the rules, review request and detectors, the
critical screen the [Important] topics; patterns left to Python have exact gates of their own.
Every answer must be the one of running every pattern."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.content_off_platform import _ORDER_SPAN, _digit_run, _digit_run_spans
from policies.content_quoting import prepare
from policies.content_rules import load_rules
from policies.critical import classify
from policies.text import decoded_subject, visible_text
from relay.parsing import parse

REPO = Path(__file__).resolve().parents[1]
RULES = load_rules(REPO / "conf" / "content_rules.toml")
PLAIN = dataclasses.replace(RULES, screen=None, critical_screen=None)  # every pattern runs
CORPUS = REPO.parent / "shared" / "corpus" / "content"
CRITICAL = [p for rule in RULES.critical_rules for p in rule.patterns]
WORDS = sorted({w for p in CRITICAL for w in re.findall(r"[a-zäöüéèñç']{3,}", p.pattern)})
texts = st.lists(st.one_of(st.sampled_from(WORDS), st.sampled_from(
    [" ", "\n", ", ", ". ", "!", "-", "[Important]", "Re: ", "> quoted", "ſ", "K", "İ",
     "07700 900123", "123-0012345-0012345"])), max_size=40).map(" ".join)


def test_the_screens_split_the_patterns():
    assert RULES.screen is not None and RULES.critical_screen is not None
    assert set(RULES.critical_screen.patterns) == set(CRITICAL)
    assert RULES.critical_screen.unscreened == ()
    # the content policy never reads a critical pattern, so its screen does not scan them
    critical_only = set(CRITICAL) - {p for r in RULES.rules for p in r.patterns}
    assert not critical_only & set(RULES.screen.patterns)
    # nearly every message names an order: these two run in Python, behind their own gates
    assert _ORDER_SPAN not in RULES.screen.patterns
    assert _digit_run(RULES.off_platform.phone_min_digits) not in RULES.screen.patterns


def test_sets_are_filled_evenly():
    sizes = [len(ids) for _, ids in RULES.screen._sets]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_critical_screen_equals_every_pattern_run(subject, text):
    assert classify(RULES, subject, text) == classify(PLAIN, subject, text)
    assert classify(RULES, subject.upper(), text.upper()) == classify(
        PLAIN, subject.upper(), text.upper())
    prepared = prepare(subject, text)
    maybe = RULES.critical_candidates(prepared)
    assert [p.pattern for p in CRITICAL if p.search(prepared) and p not in maybe] == []


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not found beside the repository")
def test_critical_screen_equals_every_pattern_run_on_the_corpus():
    for eml in sorted(CORPUS.glob("*.eml")):
        msg = parse(eml.read_bytes())
        subject, text = decoded_subject(msg), visible_text(msg)
        assert classify(RULES, subject, text) == classify(PLAIN, subject, text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789 -+().abc\n\u0660\u0966\uff11"),
               max_size=60))
def test_the_digit_run_spans_are_what_the_unicode_pattern_finds(text):
    for n in (RULES.off_platform.phone_min_digits, 1, 5):
        assert (list(_digit_run_spans(text, n))
                == [m.span() for m in _digit_run(n).finditer(text)])
