"""relay.rewrite_mime reads content type, charset and boundary without the compat32
Message round trips; what it reads must be what those methods return, for any value."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rewrite_mime import boundary_of, content_charset, content_type

PIECES = ["text/plain", "multipart/mixed", "Multipart/Alternative", "text", "a/b/c", " ", "\t",
          ";", "; ", "=", '"', "\\", "<", ">", "charset", "CharSet", "boundary", "BOUNDARY",
          "boundary*", "charset*0*", "utf-8", "UTF-8", "''", "us-ascii'en'", "%41", "=_alt_1",
          "x y", "\x0b", "\r\n ", "caf\xe9", "\udce9", "(comment)", "*", "'"]
value = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


def message(headers: list[tuple[str, str]]) -> Message:
    msg = Message()
    msg._headers = list(headers)
    return msg


def outcome(f, *args):
    try:
        return "returns", f(*args)
    except Exception as exc:  # a value no parse gives (é and a surrogate): raise alike
        return "raises", type(exc)


def charset_or_none(msg: Message) -> str | None:
    try:
        return msg.get_content_charset()
    except Exception:
        return None


@settings(max_examples=2000, deadline=None)
@given(value, st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE", "Content-Type "]))
def test_content_type_and_charset_are_the_messages(v, name):
    msg = message([("X-A", "b"), (name, v), ("Content-Type", "text/html; charset=x")])
    assert outcome(content_type, msg) == outcome(msg.get_content_type)
    assert content_charset(msg) == charset_or_none(msg)


@settings(max_examples=2000, deadline=None)
@given(value)
def test_boundary_is_the_messages(v):
    msg = message([("Content-Type", v)])
    assert outcome(boundary_of, v) == outcome(msg.get_boundary)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet='abc =;"\t\\<>', max_size=12))
def test_simple_boundaries_are_the_messages(inner):
    for v in (f'multipart/mixed; boundary="{inner}"', f"multipart/mixed;boundary={inner}",
              f'multipart/mixed ; Boundary = "{inner}" '):
        assert boundary_of(v) == message([("Content-Type", v)]).get_boundary()


def test_no_content_type():
    msg = BytesParser(policy=compat32).parsebytes(b"Subject: x\r\n\r\nbody\r\n")
    assert content_type(msg) == "text/plain"
    assert content_charset(msg) is None
    digest = BytesParser(policy=compat32).parsebytes(
        b"Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nX: y\r\n\r\nz\r\n--b--\r\n")
    assert content_type(digest.get_payload(0)) == "message/rfc822"
