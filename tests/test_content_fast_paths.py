"""The content policy's fast paths give exactly the answers of the plain ones.

The RE2 screen decides which rule, review and detector patterns Python runs at all; with
``screen=None`` every pattern runs on every message, which is the reference here. The
cheaper text passes of :mod:`policies.content_quoting` are checked against the regexes
they replace.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.content import evaluate
from policies.content_quoting import (
    _ATTRIBUTION,
    _ORIGINAL,
    _OUTLOOK_HEADER,
    _OUTLOOK_NEXT,
    _flatten,
    strip_quoted,
)
from policies.content_rules import load_rules
from policies.text import decoded_subject, visible_text
from relay.parsing import parse

REPO = Path(__file__).resolve().parents[1]
RULES = load_rules(REPO / "conf" / "content_rules.toml")
PLAIN = dataclasses.replace(RULES, screen=None)  # every pattern runs
CORPUS = REPO.parent / "shared" / "corpus" / "content"

# What the detectors and rules look for, and what they must not mistake for it.
FRAGMENTS = [
    "jo@gmail.com", "Jo.Maker+shop@Example.co.uk", "x@relay.example", "a@marketplace.example",
    "jo at gmail dot com", "jo (at) mail . com", "jo [at] example [dot] net", "jo(at)mail.com",
    "jo @ mail . com", "jo dot lantern at example dot net", "hello at shop dot co dot uk",
    "jo arroba gmail punto com", "jo chez laposte point fr", "meet at gmail. com",
    "we are at home. Com", "a dot a dot a dot a at b dot com", "myshop.com/sale",
    "www.shop.co.uk/path?x=1", "visit shopname.store", "file.txt", "v1.2.3", "sub.dpd.co.uk",
    "https://evil.example/x", "http://royalmail.com/track/1", "(https://t.co/ab)",
    "07700 900123", "+44 7700 900123", "0044 20 7946 0958", "(555) 123-4567", "555-123-4567",
    "+49 30 12345678", "06 12 34 56 78", "1234 5678 9012", "call me on 07700900123",
    "text us at +447700900123", "my mobile number is 07700 900 123",
    "tracking number 1234 5678 9012", "123-0012345-0012345", "1234-1234567-1234567",
    "2024-05-01", "01/05/2024", "£1,234.56", "€ 99,99", "20% off", "Use code WELCOME10",
    "please cancel the order", "leave us a 5-star review", "would you consider a review",
    "honest feedback", "follow us on Instagram", "İnstagram", "ınstagram", "WHATSAPP",
    "DM me", "our website", "my own shop", "ſhop", "K", "Straße", "Ｆｕｌｌ", "“it’s”",
    "a\u00a0b", "zero\u200bwidth", "\u2028", "\u3000", "\t", "\n", "\r\n", ". ", "! ",
    "> quoted line", "On Mon, Jo wrote:", "-----Original Message-----", "From: x", "Sent: y",
    "gmail", "hotmail.com", "web.de", "email me directly", "give us a call", "[Important]",
    "Thank you for your order.", "The parcel left our workshop this morning.", "Kind regards,",
]
SEPARATORS = [" ", " ", "\n", ", ", ". ", "", "\n\n"]
texts = st.lists(st.tuples(st.sampled_from(FRAGMENTS), st.sampled_from(SEPARATORS)),
                 max_size=25).map(lambda parts: "".join(f + s for f, s in parts))


def assert_same(subject: str, text: str, **kwargs) -> None:
    assert evaluate(RULES, subject, text, **kwargs) == evaluate(PLAIN, subject, text, **kwargs)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["", "Your order 123-0012345-0012345", "Re: x", "20% off"]), texts,
       st.booleans(), st.sampled_from([(), ("other@gmail.com",)]),
       st.sampled_from(["", "relay.example"]))
def test_screened_evaluate_equals_every_pattern_run(subject, text, is_reply, reply_to, alias):
    assert_same(subject, text, is_reply=is_reply, reply_to=reply_to, alias_domain=alias,
                senders=frozenset({"shop@seller.example"}))
    assert_same(subject, text.upper(), is_reply=is_reply)


def test_screened_evaluate_equals_every_pattern_run_on_long_texts():
    filler = "Thank you for your order, it left the workshop today. " * 2000
    assert_same("", filler + "jo at gmail dot com, call me on 07700 900123")
    assert_same("", " ".join(FRAGMENTS) * 50)  # past max_text_chars


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not found beside the repository")
def test_screened_evaluate_equals_every_pattern_run_on_the_corpus():
    for eml in sorted(CORPUS.glob("*.eml")):
        msg = parse(eml.read_bytes())
        for is_reply in (False, True):
            assert_same(decoded_subject(msg), visible_text(msg), is_reply=is_reply)


def test_str_split_and_re_agree_on_every_space():
    every = "".join(map(chr, (*range(0xD800), *range(0xE000, sys.maxunicode + 1))))
    assert re.findall(r"\s", every) == [c for c in every if c.isspace()]


@given(st.text(alphabet=st.sampled_from("ab \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000\u200b")))
def test_flatten_is_the_whitespace_regex(text):
    assert _flatten(text) == re.sub(r"\s+", " ", text).strip()


def _strip_quoted_reference(text: str) -> str:
    """strip_quoted as it was: every pattern tried on every line, without pre-checks."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _ORIGINAL.match(line):
            break
        if _OUTLOOK_HEADER.match(line) and any(_OUTLOOK_NEXT.match(nxt)
                                               for nxt in lines[i + 1:i + 4]):
            break
        if line.lstrip().startswith(">") or _ATTRIBUTION.match(line):
            continue
        kept.append(line)
    return "\n".join(kept)


LINES = ["> quoted", "  > quoted", "On Mon, Jo wrote:", "On Mon, Jo wrote: ",
         "Le 2 mai, X a écrit:", "Am 1. Mai schrieb X:", "-----Original Message-----",
         "-- Original Message --",
         "--original message--", "From: Jo", "from: jo@x", "Sent: today", "To: me", "Date: now",
         "ok: fine", "--", ":", "Hello", "thanks", "", "  "]


@given(st.lists(st.sampled_from(LINES), max_size=12), st.sampled_from(["\n", "\r\n", "\r"]))
def test_strip_quoted_is_the_regexes_on_every_line(lines, newline):
    text = newline.join(lines)
    assert strip_quoted(text) == _strip_quoted_reference(text)
