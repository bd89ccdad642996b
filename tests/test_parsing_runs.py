"""relay.parsing parses runs of body text as placeholders (see the module): the tree it
hands on must be the one email's compat32 parser builds from the received bytes, for any
input, down to defects, preambles, epilogues and line endings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import parsing
from relay.parsing import parse

CORPUS = Path(os.environ.get("RELAY_CORPUS")
              or Path(__file__).resolve().parents[2] / "shared" / "corpus" / "content")


def tree(msg) -> tuple:
    """Everything a reader of a compat32 Message can see, recursively."""
    payload = msg._payload
    if isinstance(payload, list):
        payload = [tree(p) for p in payload]
    return (type(msg), msg._headers, msg._unixfrom, payload, msg.preamble, msg.epilogue,
            [(type(d), d.args) for d in msg.defects], msg._default_type, msg._charset)


def same_tree(raw: bytes) -> None:
    plain = parsing._parser.parsebytes(raw)
    assert tree(parse(raw)) == tree(plain)
    assert tree(parse(bytearray(raw))) == tree(plain)


TEXT = ["Hello there,", "Your order: 123", "some text with -- dashes", "<p>html</p>"]
LINES = [
    *TEXT, "", " indented", "\tindented", "Note: header-like", "From someone", "From: a@b",
    "--b", "--b--", "--c", "--c--", "--", "---- forwarded ----", ":colon first",
    "Content-Type: text/plain", "Content-Type: multipart/mixed; boundary=c",
    "Content-Type: multipart/digest; boundary=c", "Content-Type: message/rfc822",
    "Content-Type: message/delivery-status", "Content-Type: multipart/alternative",
    "Content-Transfer-Encoding: base64", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
    "RELAYTXT0123456789ABCDEFN0X", "caf\xe9", "x\ry", "x\ny", "x\r--b", "x\r--b--",
]
EOLS = ["\r\n", "\r\n", "\r\n", "\n", "\r", ""]


HEADS = ["Content-Type: multipart/mixed; boundary=b", "Content-Type: multipart/report; boundary=b",
         "Content-Type: message/rfc822", "Content-Type: text/plain",
         "Content-Type: message/delivery-status", "Content-Type: multipart/digest; boundary=b",
         ""]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADS),
       st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from(EOLS)), max_size=60))
def test_any_line_structure_parses_to_the_plain_tree(head, lines):
    text = f"From: a@example.com\r\n{head}\r\n" + "".join(line + eol for line, eol in lines)
    same_tree(text.encode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADS), st.lists(st.sampled_from(LINES), max_size=40))
def test_crlf_only_structures_parse_to_the_plain_tree(head, lines):
    # CRLF only, so that runs form: the case the placeholders are for
    same_tree(("\r\n".join([head, "", *lines]) + "\r\n").encode("utf-8"))


TRICKY = {
    # blank lines end the blocks of a delivery-status: a run may not span them
    "delivery-status": "Content-Type: message/delivery-status\r\n\r\n"
                       "Text1\r\nText2\r\n\r\nText3\r\nText4\r\nText5\r\n",
    "delivery-status part": "Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
                            "Content-Type: Message/Delivery-Status\r\n\r\nA\r\nB\r\n\r\n"
                            "C: d\r\nE\r\nF\r\n--b--\r\n",
    # a bare CR ends a line for the parser: here it hides a boundary
    "bare CR": "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n"
               "one\r\ntwo\r--b\r\nX-A: b\r\n\r\nthree\r\nfour\r\nfive\r\n--b--\r\n",
    # ...and before the first boundary, where the run would have started (hypothesis)
    "bare CR before a boundary": "Content-Type: multipart/mixed; boundary=b\r\n\r"
                                 "--b\r\nHello there,\r\nHello there,\r\n",
    # a first line that is header-like would have been a header
    "header-like first line": "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                              "X-A: b\r\n indented\r\nFrom x\r\nNote: y\r\n\r\ntext\r\n"
                              "more\r\nand more\r\n--b--\r\n",
    "no header separator": "From: a@b\r\ntext\r\nmore\r\nX-A: b\r\n\r\nand more\r\n",
    "message/rfc822": "Content-Type: message/rfc822\r\n\r\ntext\r\nX: y\r\n\r\nz\r\n",
}


@pytest.mark.parametrize("case", TRICKY)
def test_tricky_structures_parse_to_the_plain_tree(case):
    same_tree(TRICKY[case].encode())


def test_the_bench_message():
    from scripts.benchlib.messages import MessageFactory
    raw = MessageFactory(4096).sample()
    assert parsing._text_runs(raw.decode("ascii"))  # the case this is for
    same_tree(raw)


def test_a_sender_cannot_name_a_run():
    body = "".join(f"line {i} RELAYTXT0123456789ABCDEFN{i % 3}X\r\n" for i in range(10))
    same_tree(f"Content-Type: text/plain\r\n\r\n{body}".encode())


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS}")
def test_the_corpus_parses_to_the_plain_tree():
    files = sorted(CORPUS.glob("*.eml"))
    assert files
    for path in files:
        raw = path.read_bytes()
        same_tree(raw)
        same_tree(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
