"""MIME plumbing for the body rewrite: bytes and text, charsets, encoded words, CTEs.

Its one job is getting between the bytes of a mail part and the text addresses are
searched in, and back, without losing anything: compat32 surrogates to bytes, CRLF line
endings, charset lookup, RFC 2047 encoded words, Content-Transfer-Encoding decode and
re-encode, and reading or setting a header in a list of raw (name, value) pairs. Pure
functions, no I/O, no knowledge of addresses.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterable
from email.message import Message
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from functools import lru_cache

Headers = list[tuple[str, str]]


# -- small helpers ---------------------------------------------------------------------

_EOL = re.compile(rb"\r\n|\r|\n")
_LONG_LINE = re.compile(rb"[^\r\n]{999}")


def to_bytes(text: str) -> bytes:
    """compat32 keeps undecodable input bytes as surrogates; give the bytes back."""
    try:
        return text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def crlf(data: bytes) -> bytes:
    n = data.count(b"\n")
    if n == data.count(b"\r\n") == data.count(b"\r"):
        return data  # already canonical: the usual case for mail received over SMTP
    return _EOL.sub(b"\r\n", data)


def raw_text(value: str) -> str:
    """A raw compat32 header value as text: surrogates are 8-bit bytes, most likely UTF-8."""
    if value.isascii():
        return value
    data = to_bytes(value)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip('"')).name
    except (LookupError, ValueError):
        return None


def _decode(data: bytes, charset: str | None) -> str:
    return data.decode(_codec(charset) or "utf-8", "replace")


def header_get(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key.strip().lower() == name:
            return value
    return None


def _header_set(headers: Headers, name: str, value: str) -> Headers:
    lname, out, done = name.lower(), [], False
    for key, old in headers:
        if key.strip().lower() == lname:
            if not done:
                out.append((key, value))
                done = True
            continue
        out.append((key, old))
    if not done:
        out.append((name, value))
    return out


def _params_message(name: str, value: str) -> Message:
    tmp = Message()
    tmp[name] = value
    return tmp


# -- what compat32 reads from Content-Type, cheaper --------------------------------------
# Each returns exactly what the Message method named returns; tests/test_rewrite_mime_facts.py
# compares them on generated values.

def _raw_content_type(part: Message) -> str | None:
    """The value Message.get("content-type") starts from, or None when it has none."""
    for key, value in part._headers:
        if key.lower() == "content-type":
            return value
    return None


def content_type(part: Message) -> str:
    """part.get_content_type(), without its policy round trip for a plain value."""
    value = _raw_content_type(part)
    if value is None:
        return part.get_default_type()
    if part.policy is not compat32 or not isinstance(value, str) or not value.isascii():
        return part.get_content_type()  # surrogates: compat32 reads a Header object
    ctype = value.partition(";")[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


@lru_cache(maxsize=512)
def _charset_of(value: str) -> str | None:
    try:
        return _params_message("Content-Type", value).get_content_charset()
    except Exception:
        return None


def content_charset(part: Message) -> str | None:
    """part.get_content_charset(), None when it raises; memoized by header value (text
    parts' Content-Type values repeat from message to message, boundaries aside)."""
    value = _raw_content_type(part)
    if value is None:
        return None
    if part.policy is compat32 and isinstance(value, str):
        return _charset_of(value)
    try:
        return part.get_content_charset()
    except Exception:
        return None


# `type/subtype; boundary="..."` and nothing else: get_boundary() gives the quoted text
# right-stripped (no quote, backslash, ";" or "<...>" in it to unquote or split at).
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+"
_ONLY_BOUNDARY = re.compile(
    rf'[ \t]*{_TOKEN}/{_TOKEN}[ \t]*;[ \t]*boundary[ \t]*=[ \t]*"([^"\\;<>\r\n]*)"[ \t]*',
    re.IGNORECASE)


def boundary_of(value: str) -> str | None:
    """Message.get_boundary() of a message whose Content-Type value is `value`."""
    if value.isascii():
        m = _ONLY_BOUNDARY.fullmatch(value)
        if m:
            return m.group(1).rstrip()
    return _params_message("Content-Type", value).get_boundary()


# -- RFC 2047 encoded words ------------------------------------------------------------

_EW_SRC = r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?="
_EW = re.compile(_EW_SRC)
_EW_RUN = re.compile(rf"{_EW_SRC}(?:\s+{_EW_SRC})*")


def _ew_bytes(enc: str, text: str) -> bytes:
    data = to_bytes(text)
    if enc in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return data


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words; never raises (unknown charsets read as UTF-8).

    Adjacent words of one charset are joined before decoding because many encoders split
    multi-byte characters between words.
    """
    out: list[str] = []
    buf, buf_cs, pos = bytearray(), None, 0

    def flush() -> None:
        nonlocal buf_cs
        if buf_cs is not None:
            out.append(_decode(bytes(buf), buf_cs))
            buf.clear()
            buf_cs = None

    for m in _EW.finditer(value):
        gap = value[pos:m.start()]
        if buf_cs is None or gap.strip(" \t\r\n"):
            flush()
            out.append(gap)  # whitespace between two encoded words is not text
        charset = m.group(1).lower()
        if buf_cs is not None and charset != buf_cs:
            flush()
        buf += _ew_bytes(m.group(2), m.group(3))
        buf_cs = charset
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def encode_words(text: str, max_bytes: int = 36) -> list[str]:
    """UTF-8 'B' encoded words, short enough to fold after any header name.

    Characters are never split between words (RFC 2047 section 5).
    """
    chunks: list[bytes] = []
    cur = b""
    for ch in text:
        b = ch.encode("utf-8", "replace")
        if cur and len(cur) + len(b) > max_bytes:
            chunks.append(cur)
            cur = b""
        cur += b
    if cur or not chunks:
        chunks.append(cur)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


# -- transfer encodings ----------------------------------------------------------------

_IDENTITY_CTES = ("", "7bit", "8bit", "binary")


def _cte(headers: Headers) -> str:
    value = header_get(headers, "content-transfer-encoding") or ""
    return value.strip().lower()


def _decode_cte(raw: bytes, cte: str) -> bytes:
    if cte == "base64":
        try:
            return binascii.a2b_base64(raw)
        except (binascii.Error, ValueError):
            return _ew_bytes("b", raw.decode("latin-1"))  # lenient, like mail clients
    if cte == "quoted-printable":
        return binascii.a2b_qp(raw)
    return raw


def _encode_cte(data: bytes, cte: str) -> tuple[bytes, str | None]:
    """Re-encode in the original CTE; the second item is a new CTE header if it had to change."""
    if cte == "base64":
        return base64.encodebytes(data), None
    if cte == "quoted-printable":
        return binascii.b2a_qp(data, istext=True), None
    if cte in _IDENTITY_CTES and _LONG_LINE.search(data):
        # A longer alias pushed a line over the SMTP limit.
        return binascii.b2a_qp(data, istext=True), "quoted-printable"
    return data, None


# -- what kind of leaf -----------------------------------------------------------------

# Line-folded formats: an address can be split by a fold (RFC 5545 3.1, RFC 6350 3.2).
_FOLDED_TYPES = frozenset({"text/calendar", "text/x-vcalendar", "text/vcard", "text/x-vcard",
                           "text/directory", "application/ics"})
_TEXTUAL_APP = frozenset({"application/json", "application/xml", "application/xhtml+xml",
                          "application/javascript", "application/x-javascript",
                          "application/ecmascript", "application/rtf", "application/x-vcard"})
_TEXT_EXTS = (".txt", ".csv", ".tsv", ".htm", ".html", ".xml", ".json", ".md", ".log",
              ".eml", ".rtf")
_FOLDED_EXTS = (".ics", ".vcs", ".vcf")


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        return ""
    if isinstance(name, tuple):
        name = collapse_rfc2231_value(name)
    return decode_words(name).strip().lower()


def leaf_kind(part: Message, ctype: str) -> str:
    """'folded', 'text', 'container' (a multipart or message we could not split) or 'opaque'."""
    if ctype in _FOLDED_TYPES:
        return "folded"
    maintype, _, subtype = ctype.partition("/")
    if maintype == "text" or ctype in _TEXTUAL_APP or subtype.endswith(("+xml", "+json")):
        return "text"
    if maintype in ("multipart", "message"):
        return "container"
    if ctype == "application/octet-stream":
        name = _filename(part)
        if name.endswith(_FOLDED_EXTS):
            return "folded"
        if name.endswith(_TEXT_EXTS):
            return "text"
    return "opaque"
