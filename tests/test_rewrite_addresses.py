"""The fast address matcher finds what the fully compiled one finds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rewrite_addresses import AddressReplacer, _CompiledReplacer

REAL = {"jane.buyer@mail.example": "b1@relay.example", "shop@seller.example": "s1@relay.example"}
KEYS = sorted(REAL, key=len, reverse=True)


@st.composite
def spelled(draw, address: str) -> str:
    out = []
    for ch in address:
        ch = ch.upper() if draw(st.booleans()) else ch
        form = draw(st.sampled_from(["lit", "lit", "lit", "dec", "hex", "pct"]))
        out.append({"lit": ch, "dec": f"&#{ord(ch)};", "hex": f"&#x{ord(ch):x};",
                    "pct": f"%{ord(ch):02X}"}[form])
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(spelled("jane.buyer@mail.example"), spelled("shop@seller.example"),
                          st.sampled_from([" ", "<b>", "mailto:", "&nbsp;", "x", ".", "@",
                                           "%", "&amp;", "\u0130", "é"])), max_size=12))
def test_fast_and_compiled_matchers_agree(parts):
    text = "".join(parts)
    fast = AddressReplacer(REAL)
    slow = _CompiledReplacer(KEYS, [REAL[k] for k in KEYS])
    assert fast.subn_text(text) == slow.subn_text(text)
    data = text.encode("utf-8")
    assert fast.subn_bytes(data) == slow.subn_bytes(data)


def test_unreplaced_escapes_keep_their_spelling():
    text = "Write to&nbsp;jane.buyer&#64;mail.example &amp; more"
    new, n = AddressReplacer(REAL).subn_text(text)
    assert (new, n) == ("Write to&nbsp;b1@relay.example &amp; more", 1)


def test_non_ascii_addresses_use_the_compiled_matcher():
    replacer = AddressReplacer({"jösé@mail.example": "b1@relay.example"})
    assert replacer.sub_text("an J&#214;SÉ@MAIL.EXAMPLE") == "an b1@relay.example"


def test_the_ascii_supersets_give_these_characters_only_for_these_bytes():
    """relay.rewrite_body skips decoding a part when its bytes hold no "@", "%" or "&"
    and its codec is one of these: the text then holds none either."""
    from relay.rewrite_body import _ASCII_SUPERSETS

    for codec in _ASCII_SUPERSETS:
        for byte in range(256):
            text = bytes([byte]).decode(codec, "surrogateescape")
            assert not set(text) & set("@%&") or text == chr(byte), (codec, byte)
    for data in (b"\xc3\xa9@", b"\xf0\x9f\x98\x80%", b"\xe2\x80&", b"\xc0\x80", b"\xed\xa0\x80"):
        text = data.decode("utf-8", "surrogateescape")
        assert [c for c in text if c in "@%&"] == [chr(b) for b in data if chr(b) in "@%&"]


@pytest.mark.parametrize("data", [b"", b"plain text", b"jane@mail.example", b"jane%40mail",
                                  b"jane&#64;mail", b"&amp;", b"100%", b"\xff@"])
def test_finds_nothing_in_is_never_wrong(data):
    for replacements in ({}, {"jane@mail.example": "a@relay.example"},
                         {"j\u00e4ne@mail.example": "a@relay.example"}):
        r = AddressReplacer(replacements)
        if r.finds_nothing_in(data):
            assert r.subn_bytes(data) == (data, 0)
            assert r.subn_text(data.decode("latin-1")) == (data.decode("latin-1"), 0)
