"""relay.rewrite writes a header that fits on one line without splitting it into pieces
first, and keeps the pieces of the mailboxes it has written: the lines must be the ones
the pieces give (the old code, kept here as the oracle), for any value."""

from __future__ import annotations

import contextlib
import re
from email.utils import formataddr

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rewrite import _clean, _line, _mailbox, _pieces, _structured, _unstructured
from relay.rewrite_addresses import AddressReplacer
from relay.rewrite_mime import encode_words


def old_structured(name: str, value: str, keep_surrogates: bool = False) -> bytes:
    return _line(name, _pieces(_clean(value, keep_surrogates)))


def old_unstructured(name: str, text: str) -> bytes:
    text = _clean(text)
    pieces = _pieces(text)
    if text.isascii() and "=?" not in text and max(map(len, pieces)) < 900:
        return _line(name, pieces)
    return _line(name, encode_words(text))


def old_mailbox(name: str | None, addr: str, r: AddressReplacer) -> list[str]:
    addr = re.sub(r"[\s<>]", "", _clean(addr))
    if not addr.isascii() and "@" in addr:
        local, _, domain = addr.rpartition("@")
        with contextlib.suppress(UnicodeError):
            addr = f"{local}@{domain.encode('idna').decode('ascii')}"
    name = _clean(r.sub_text(name or ""))[:200].strip()
    if not name:
        return [addr]
    if name.isascii() and "=?" not in name and addr.isascii():
        return _pieces(formataddr((name, addr)))
    if name.isascii() and "=?" not in name:
        quoted = formataddr((name, "x@x")).rpartition(" <")[0]
        return [*_pieces(quoted), f"<{addr}>"]
    return [*encode_words(name), f"<{addr}>"]


PIECES = st.sampled_from(["a", "word", " ", "  ", '"', '"quoted string"', "\\", "\t", "\r\n ",
                          "=?", "é", "\udce9", "\x00", "@", "jane@mail.example", "<", ">",
                          "x" * 40, "y" * 90, ";", ",", "(c)"])
VALUE = st.lists(PIECES, max_size=12).map("".join)
NAME = st.sampled_from(["Subject", "Content-Type", "X", "List-Unsubscribe", "N" * 70])


@settings(max_examples=3000, deadline=None)
@given(NAME, VALUE, st.booleans())
def test_structured_and_unstructured_lines_are_the_pieces_lines(name, value, keep):
    assert _structured(name, value, keep) == old_structured(name, value, keep)
    assert _unstructured(name, value) == old_unstructured(name, value)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.none(), VALUE), st.sampled_from([
    "k3x9@relay.example", " <k3x9@relay.example> ", "jane@m\u00e4il.example", "a b@c",
    "", "x@" + "\u00e4" * 70 + ".example", "x@\udce9.example"]))
def test_mailboxes_are_the_old_ones(name, addr):
    r = AddressReplacer({"jane@mail.example": "a1@relay.example"})
    for _ in range(2):  # the second time from the cache
        assert list(_mailbox(name, addr, r)) == old_mailbox(name, addr, r)
        assert _line("From", _mailbox(name, addr, r)) == _line("From", old_mailbox(name, addr, r))
