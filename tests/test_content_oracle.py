"""The content policy's fast text passes give exactly what the old ones gave.

The old code is kept in tests/content_oracle.py. Each pass is compared with its oracle on
generated input, and the whole policy (visible text, prepared text, every evaluate output,
the verdict) on the corpus, the benchmark's message and generated messages, once as it
is and once with the old passes patched in.
"""

from __future__ import annotations

import base64
import quopri
import re
import sys
from contextlib import contextmanager
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policies import content, content_off_platform, content_quoting, order_reference, text
from policies.content_rules import load_rules
from policies.context import SELLER_TO_BUYER, Context, Envelope, Settings
from relay.parsing import parse
from tests import content_oracle as old

REPO = Path(__file__).resolve().parents[1]
RULES = load_rules(REPO / "conf" / "content_rules.toml")
CORPUS = REPO.parent / "shared" / "corpus" / "content"
SPACES = [c for c in map(chr, (*range(0xD800), *range(0xE000, sys.maxunicode + 1)))
          if c.isspace()]


def _old_spans(text_: str, min_digits: int):
    """The spans the old gate of _phone_numbers scanned: [0-9] on an ASCII text, else \\d."""
    if text_.isascii():
        pattern = re.compile(r"[0-9](?:[^0-9]{0,4}[0-9]){" + str(max(min_digits - 1, 0)) + "}")
    else:
        pattern = content_off_platform._digit_run(min_digits)
    return (m.span() for m in pattern.finditer(text_))


@contextmanager
def old_passes():
    """Every pass the speed work changed, as it was. (evaluate tries every rule when the
    screen cannot rule out all of their patterns at once: -1 is no pattern's id.)"""
    with mock.patch.multiple(text, _render=old._render, _tidy=old._tidy,
                             visible_text=old.visible_text, decoded_subject=old.decoded_subject), \
         mock.patch.multiple(content_quoting, normalize=old.normalize,
                             strip_quoted=old.strip_quoted, _flatten=old._flatten), \
         mock.patch.object(content, "strip_quoted", old.strip_quoted), \
         mock.patch.object(content, "_rule_patterns", lambda rules: frozenset({-1})), \
         mock.patch.object(content_off_platform, "_digit_run_spans", _old_spans):
        yield


# --------------------------------------------------------------------------------------
# the single passes
# --------------------------------------------------------------------------------------

def test_the_space_lists_are_every_space():
    assert sorted(content_quoting._SPACES) == [c for c in SPACES if c != " "]
    assert sorted(text._OTHER_SPACES) == [c for c in SPACES if c not in " \t\n\r\x0b\x0c"]


WHITE = ("ab \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u3000"
         "\u200bé€")


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(WHITE), max_size=80))
def test_tidy_and_flatten_are_the_old_ones(text_):
    assert text._tidy(text_) == old._tidy(text_)
    assert content_quoting._flatten(text_) == old._flatten(text_)


@given(st.text())
def test_flatten_and_normalize_are_the_old_ones_on_any_text(text_):
    assert content_quoting._flatten(text_) == old._flatten(text_)
    assert content_quoting.normalize(text_) == old.normalize(text_)


QUOTES = "".join(content_quoting._QUOTES) + "'\"-\u00b4\u2033\uff02\u02bc\u201f\u2010\u2011\u2012"
NFKC = "ﬁＦ²½e\u0301\u212b\u1e9b\u0323\uac00\u1100\u1161é€😀\u2028\u3000 a"


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(QUOTES + NFKC), max_size=40))
def test_normalize_is_the_old_one_on_quotes_and_compatibility_forms(text_):
    assert content_quoting.normalize(text_) == old.normalize(text_)


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_normalize_leaves_ascii_as_it_is(text_):
    assert content_quoting.normalize(text_) == old.normalize(text_) == text_


def test_normalize_on_every_ascii_pair():
    chars = [chr(i) for i in range(128)]
    for a in chars:
        pairs = "".join(a + b for b in chars)
        assert content_quoting.normalize(pairs) == old.normalize(pairs) == pairs


LINES = ["> quoted", "  > quoted", ">", " \t>x", "a > b", "On Mon, Jo wrote:",
         "On Mon, Jo wrote: ", "Le 2 mai, X a écrit:", "Am 1. Mai schrieb X:",
         "-----Original Message-----", "-- Original Message --", "--original message--", "--",
         "a--b", "From: Jo", "from: jo@x", " From: x", "Sent: today", "To: me", "Date: now",
         "date:x", "ok: fine", ":", "::", "Hello", "thanks", "", "  ", "\t", "\u2028", "é:"]


@settings(max_examples=500)
@given(st.lists(st.one_of(st.sampled_from(LINES), st.text(alphabet=":->a \r\n", max_size=8)),
                max_size=14),
       st.sampled_from(["\n", "\r\n", "\r"]), st.booleans())
@example(["mine", "From: Jo", "a", "b", "Sent: x", "theirs"], "\n", False)
@example(["mine", "From: Jo", "a", "b", "c", "To: x", "mine too"], "\n", True)
@example(["mine", "From: Jo", "", "", "Date: x"], "\r\n", True)
@example(["From: Jo", "a", "b"], "\n", True)
def test_strip_quoted_is_the_old_one(lines, newline, trailing):
    text_ = newline.join(lines) + (newline if trailing else "")
    assert content_quoting.strip_quoted(text_) == old.strip_quoted(text_)


def test_latin1_has_no_digit_but_the_ascii_ones():
    latin1 = "".join(map(chr, range(256)))
    assert re.findall(r"\d", latin1) == list("0123456789")


@given(st.text(alphabet=st.sampled_from("0123456789 -+().a\n")
               | st.sampled_from("\u0660\uff11é²\xa0"), max_size=60), st.integers(1, 12))
@example("1abcd2", 2)
@example("07700 (900) 1 2 3", 9)
@example("1-2--3---4----5-----6", 3)
def test_digit_run_spans_are_the_old_ones(text_, n):
    assert list(content_off_platform._digit_run_spans(text_, n)) == list(_old_spans(text_, n))


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

TAGS = ["p", "div", "br", "li", "tr", "td", "th", "table", "ul", "h1", "pre", "span", "b",
        "blockquote", "a", "a href='https://x.example/a'", "a href=' #top '", "a href=''",
        "a href='mailto:jo@mail.example'", "script", "style", "title", "head", "noscript",
        "template", "meta", "svg", "math", "font", "center", "x-custom", "#text", "-text",
        "!comment", "img src=x"]
PIECES = [
    *(f"<{t}>" for t in TAGS), *(f"</{t.split()[0]}>" for t in TAGS),
    "<!-- c -->", "<!DOCTYPE html>", "<![CDATA[c]]>", "<?pi x?>", "&nbsp;", "&amp;", "&#160;",
    "&#x2028;", "&lt;p&gt;", "word", "two words", "é", "€", "😀", "> quoted", "On Mon, Jo wrote:",
    "07700 900123", "jo@gmail.com", *SPACES[:12], "\r\n", "\n\n\n", "  ", "<", ">",
]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=50))
def test_html_to_text_is_the_old_one(pieces):
    html = "".join(pieces)
    assert text.html_to_text(html) == old.html_to_text(html)


@pytest.mark.parametrize("depth", [199, 200, 201, 260])
def test_html_to_text_is_the_old_one_past_the_depth_limit(depth):
    html = "<div>a<blockquote>" * depth + "deep <a href='https://x.example'>x</a>" + "</div>" * 3
    assert text.html_to_text(html) == old.html_to_text(html)


# --------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------

CONTENT_TYPES = [
    None, "text/plain", 'text/plain; charset="utf-8"', "text/plain; charset=UTF-8",
    "TEXT/HTML; CHARSET=iso-8859-1", 'text/html; charset="windows-1252"; format=flowed',
    "text/plain; charset=unknown-8bit", "text/plain; charset*=utf-8''utf%2D8",
    "text/plain; charset*=x-bogus''ut%66-8", "text/plain; charset=\"utf-16\"",
    "text/plain; charset=é", "text/plain;charset=us-ascii;", "text/html; ; charset=latin-1",
    "text", "text/plain/extra", "multipart/alternative", "message/rfc822", "application/pdf",
    "image/png; name=x.png", "text/enriched", "text/plain; charset=\"utf-8\r\n\tfolded\"",
]
BODIES = ["Hello there", "<p>Hi <b>you</b></p><p>call 07700 900123</p>", "café ☕ “q”",
          "> quoted\r\nmine", "", "   ", "a\r\n\r\n\r\nb", "<blockquote>x</blockquote>y"]


def _leaf(ctype: str | None, body: str, cte: str, disposition: str | None) -> bytes:
    head = []
    if ctype is not None:
        head.append(f"Content-Type: {ctype}")
    if disposition:
        head.append(f"Content-Disposition: {disposition}")
    raw = body.encode("utf-8")
    if cte == "base64":
        raw = base64.encodebytes(raw)
    elif cte == "quoted-printable":
        raw = quopri.encodestring(raw)
    head.append(f"Content-Transfer-Encoding: {cte}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw + b"\r\n"


leaves = st.builds(_leaf, st.sampled_from(CONTENT_TYPES), st.sampled_from(BODIES),
                   st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "x-weird"]),
                   st.sampled_from([None, "attachment", "inline", "ATTACHMENT; filename=a"]))


def _message(parts: list[bytes], multipart: bool) -> bytes:
    head = b"From: shop@seller.example\r\nSubject: Order 123-0012345-0012345\r\n"
    if not multipart:
        return head + parts[0]
    body = b"".join(b"--b1\r\n" + p for p in parts) + b"--b1--\r\n"
    return head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n' + body


PARSERS = [parse, BytesParser(policy=email_policy.compat32).parsebytes,
           BytesParser(policy=email_policy.default).parsebytes]


@settings(max_examples=300, deadline=None)
@given(st.lists(leaves, min_size=1, max_size=4), st.booleans())
def test_visible_text_is_the_old_one(parts, multipart):
    raw = _message(parts, multipart)
    for parser in PARSERS:
        msg = parser(raw)
        assert text.visible_text(msg) == old.visible_text(msg)


SUBJECT_PIECES = ["Your order", " ", "  ", "\t", "\r\n ", "=?", "?=", "=?utf-8?q?caf=C3=A9?=",
                  "=?UTF-8?B?Y2Fmw6k=?=", "=?iso-8859-1?q?=E9?=", "=?bogus?q?x?=", "=?utf-8?x?y?=",
                  "=?utf-8?b?!!?=", "é", "€", "123-0012345-0012345", "[Important]", "Re:"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(SUBJECT_PIECES), max_size=8), st.sampled_from(PARSERS),
       st.sampled_from(["utf-8", "latin-1"]))
def test_decoded_subject_is_the_old_one(pieces, parser, charset):
    raw = b"Subject: " + "".join(pieces).encode(charset, "replace") + b"\r\n\r\nbody\r\n"
    msg = parser(raw)
    assert text.decoded_subject(msg) == old.decoded_subject(msg)


@given(st.sampled_from(CONTENT_TYPES[1:]) | st.text(max_size=40).map(lambda t: f"text/plain; {t}"))
@example("text/plain; charset=\"a\\\"b\"")
def test_content_type_is_what_the_message_says(value):
    part = Message()
    try:
        part["Content-Type"] = value
    except ValueError:
        return
    expected = (part.get_content_type(), part.get_content_charset())
    assert text._content_type(part) == expected
    assert text._content_type(part) == expected  # and from the cache


# --------------------------------------------------------------------------------------
# the whole policy
# --------------------------------------------------------------------------------------

def _corpus() -> list[bytes]:
    return [eml.read_bytes() for eml in sorted(CORPUS.glob("*.eml"))] if CORPUS.is_dir() else []


def _bench_message() -> bytes:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from benchlib.messages import MessageFactory
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return MessageFactory(4096).make("shop@seller.example", "Hollow Oak Woodcraft",
                                     "abc@relay.example", "123-0012345-0012345", 1)


def _outputs(raw: bytes) -> list[object]:
    """Everything the content policy answers for a message, as a reply and as not one."""
    msg = parse(raw)
    subject = text.decoded_subject(msg)
    body = text.visible_text(msg)
    out: list[object] = [body]
    for is_reply in (False, True):
        out.append(content_quoting.prepare(subject, body, RULES.max_text_chars,
                                           is_reply=is_reply))
        out.append(content.evaluate(RULES, subject, body, reply_to=("x@gmail.com",),
                                    senders=frozenset({"shop@seller.example"}),
                                    alias_domain="relay.example", is_reply=is_reply))
        ctx = Context(stage="data", envelope=Envelope("shop@seller.example", "abc@relay.example"),
                      settings=Settings(content_rules=RULES), direction=SELLER_TO_BUYER,
                      seller_senders=frozenset({"shop@seller.example"}), message=msg,
                      from_addresses=("shop@seller.example",), is_reply=is_reply)
        out += [content.check(ctx), order_reference.check(ctx), ctx.named_orders]
    return out


def _corpus_sentences() -> list[str]:
    sentences = ["Use code WELCOME10 at checkout.", "Here is your code: SAVE20", "20% off today!",
                 "Please cancel the order.", "Leave us a 5-star review.", "DM me on Instagram."]
    for raw in _corpus():
        msg = parse(raw)
        prepared = content_quoting.prepare(text.decoded_subject(msg), text.visible_text(msg))
        sentences += re.split(r"(?<=[.!?]) ", prepared)
    return sentences


def test_evaluate_asks_the_rules_as_before_on_each_corpus_sentence():
    # one sentence at a time: many give a single rule a candidate pattern
    rule_ids = {rule.id for rule in RULES.rules}
    for sentence in _corpus_sentences():
        result = content.evaluate(RULES, "", sentence, is_reply=False)
        fired = {k: v for k, v in result.matches.items() if k in rule_ids}
        assert fired == old.rule_matches(RULES, sentence, RULES.candidates(sentence))


def _assert_as_old(raw: bytes) -> None:
    new = _outputs(raw)
    with old_passes():
        assert _outputs(raw) == new


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not found beside the repository")
@pytest.mark.parametrize("index", range(len(_corpus())))
def test_the_policy_answers_as_before_on_the_corpus(index):
    _assert_as_old(_corpus()[index])


@pytest.mark.parametrize("accent", [b"", "\u2019 caf\u00e9 \u20ac5\u00a0".encode()])
def test_the_policy_answers_as_before_on_the_benchmark_message(accent):
    _assert_as_old(_bench_message().replace(b"Thank you", b"Thank you" + accent))


@settings(max_examples=60, deadline=None)
@given(st.lists(leaves, min_size=1, max_size=3), st.booleans())
def test_the_policy_answers_as_before_on_generated_messages(parts, multipart):
    _assert_as_old(_message(parts, multipart))
