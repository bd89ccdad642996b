"""The anonymizing rewrite (DESIGN.md "Privacy of the forwarded message"). Pure, no I/O.

The top-level header block is rebuilt from an allow-list and written line by line here,
never by email.generator, so header injection is impossible by construction whatever the
Python patch level: every value is stripped of control characters, then folded only at
spaces (outside quoted strings) or RFC 2047-encoded by our own code. The body is walked by
`relay.rewrite_body`, which replaces every real address of either party by its alias.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import format_datetime, formataddr, parsedate_to_datetime
from functools import lru_cache

from relay.parsing import Chunk
from relay.rewrite_addresses import AddressReplacer, sub_header_value
from relay.rewrite_body import render_body
from relay.rewrite_mime import Headers, decode_words, encode_words, header_get, raw_text

__all__ = ["RewritePlan", "rewrite", "rewrite_parts"]


@dataclass(frozen=True)
class RewritePlan:
    from_name: str | None          # display name from the database (never the incoming header)
    from_addr: str                 # the sender's alias address, e.g. "k3x9...@relay.example"
    to_name: str | None
    to_addr: str                   # the real recipient address
    message_id: str                # relay's own, already with angle brackets "<...@relay.example>"
    in_reply_to: str | None        # already mapped by the caller, with angle brackets
    references: tuple[str, ...]    # already mapped by the caller
    replacements: Mapping[str, str]  # lower-cased real address -> alias address (both parties)
    extra_headers: tuple[tuple[str, str], ...] = ()  # e.g. ("List-Unsubscribe", "<mailto:...>")


# MIME headers of the original that describe the body and therefore must pass.
_MIME_HEADERS = ("Content-Type", "Content-Transfer-Encoding", "Content-Language",
                 "Content-Disposition")
_MIME_NAMES = frozenset(h.lower() for h in _MIME_HEADERS)
# Names the relay writes itself; an extra header may not duplicate them.
_RELAY_HEADERS = frozenset(h.lower() for h in (
    "From", "To", "Reply-To", "Message-ID", "In-Reply-To", "References", "Date", "Subject",
    "MIME-Version", *_MIME_HEADERS))

_MAX_LINE = 78            # RFC 5322 2.1.1 "SHOULD"; folding keeps lines under it when it can
_MAX_NAME = 200           # a display name is one unfoldable quoted string: keep it bounded
_FOLD = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_FIELD_NAME = re.compile(r"[!-9;-~]+")   # RFC 5322 ftext
_SINGLE_SPACE = re.compile(r"(?<=[^ ]) (?=[^ ])")
_WHITESPACE = re.compile(r"\s")
_NOT_IN_ADDR_SPEC = re.compile(r"[\s<>]")


def _clean(value: str, keep_surrogates: bool = False) -> str:
    """One line of text: CR, LF, NUL, tabs and every other control become a single space.

    Surrogates stand for raw 8-bit bytes of a copied header; they are kept only there.
    """
    if value.isascii() and value.isprintable():  # the usual case: nothing to remove
        return value.strip()
    if not keep_surrogates:
        value = _SURROGATES.sub("", value)
    return _CONTROLS.sub(" ", _FOLD.sub("", value)).strip()


def _pieces(value: str) -> list[str]:
    """Split at single spaces outside quoted strings: the places a fold cannot change meaning.

    (compat32 does not unfold parameters, so a fold inside a quoted boundary would break it.)
    """
    if '"' not in value:  # no quoted string: every single space between words will do
        return _SINGLE_SPACE.split(value)
    pieces, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = quoted
        elif ch == '"':
            quoted = not quoted
        elif (ch == " " and not quoted and 0 < i < len(value) - 1
              and value[i - 1] != " " and value[i + 1] != " "):
            pieces.append(value[start:i])
            start = i + 1
    pieces.append(value[start:])
    return pieces


def _line(name: str, pieces: Sequence[str]) -> bytes:
    """`Name: value` CRLF, folded greedily; pieces come from _pieces or encode_words."""
    if pieces and len(name) + len(pieces) + sum(map(len, pieces)) < _MAX_LINE:
        # fits on one line: _folded would fold nowhere
        return f"{name}: {' '.join(pieces)}\r\n".encode("utf-8", "surrogateescape")
    return _folded(name, pieces)


def _one_line(name: str, value: str) -> bytes | None:
    """`_line(name, _pieces(value))` when that is one line, else None: the pieces are
    value split at single spaces, so they join back to it, and their lengths and
    number add up to len(value) + 1."""
    if len(name) + len(value) + 1 < _MAX_LINE:
        return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
    return None


def _folded(name: str, pieces: Sequence[str]) -> bytes:
    out = f"{name}:"
    width = len(out)
    for piece in pieces:
        if width + 1 + len(piece) > _MAX_LINE and width > len(name) + 1:
            out += "\r\n " + piece
            width = 1 + len(piece)
        else:
            out += " " + piece
            width += 1 + len(piece)
    return out.encode("utf-8", "surrogateescape") + b"\r\n"


def _structured(name: str, value: str, keep_surrogates: bool = False) -> bytes:
    value = _clean(value, keep_surrogates)
    return _one_line(name, value) or _line(name, _pieces(value))


def _unstructured(name: str, text: str) -> bytes:
    """Subject-like text: plain when it is ASCII and foldable, else RFC 2047 words."""
    text = _clean(text)
    # "=?" would be decoded by the reader as an encoded word: encode to keep it literal.
    if text.isascii() and "=?" not in text:
        line = _one_line(name, text)  # a piece of under 78 characters is under 900 too
        if line is not None:
            return line
        pieces = _pieces(text)
        if max(map(len, pieces)) < 900:
            return _line(name, pieces)
    return _line(name, encode_words(text))


def _addr_spec(addr: str) -> str:
    addr = _NOT_IN_ADDR_SPEC.sub("", _clean(addr))
    if not addr.isascii() and "@" in addr:
        local, _, domain = addr.rpartition("@")
        # A failure leaves it as is: an internationalized address needs SMTPUTF8 anyway.
        with contextlib.suppress(UnicodeError):
            addr = f"{local}@{domain.encode('idna').decode('ascii')}"
    return addr


def _mailbox(name: str | None, addr: str, r: AddressReplacer) -> Sequence[str]:
    """Header pieces for `Name <addr>`; names come from the database and are still cleaned."""
    return _mailbox_pieces(r.sub_text(name or ""), addr)


@lru_cache(maxsize=1024)  # a pair's names and aliases come back message after message
def _mailbox_pieces(name: str, addr: str) -> tuple[str, ...]:
    addr = _addr_spec(addr)
    name = _clean(name)[:_MAX_NAME].strip()
    if not name:
        return (addr,)
    # "=?" in a plain name would be decoded by the reader as an encoded-word of our making
    if name.isascii() and "=?" not in name and addr.isascii():
        return tuple(_pieces(formataddr((name, addr))))
    if name.isascii() and "=?" not in name:
        quoted = formataddr((name, "x@x")).rpartition(" <")[0]
        return (*_pieces(quoted), f"<{addr}>")
    return (*encode_words(name), f"<{addr}>")


def _msg_id(value: str | None) -> str:
    return _WHITESPACE.sub("", _clean(value or ""))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The shape nearly every Date has; email.utils reads it in Python, token by token.
_PLAIN_DATE = re.compile(rf"(?:{'|'.join(_DAYS)}), ([0-9]{{1,2}}) ({'|'.join(_MONTHS)}) "
                         r"([1-9][0-9]{3}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{4})")


def _parse_date(value: str) -> datetime:
    """parsedate_to_datetime(value), the same datetime (or exception) for any value."""
    m = _PLAIN_DATE.fullmatch(value)
    if m is None:
        return parsedate_to_datetime(value)
    day, month, year, hour, minute, second, sign, zone = m.groups()
    fields = (int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute),
              int(second))
    offset = int(zone)
    if offset == 0 and sign == "-":  # -0000: the zone is not known
        return datetime(*fields)
    seconds = (offset // 100) * 3600 + (offset % 100) * 60
    return datetime(*fields, tzinfo=timezone(timedelta(
        seconds=-seconds if sign == "-" else seconds)))


def _format_utc(when: datetime) -> str:
    """format_datetime(when) of an aware datetime in UTC, without its strftime round trip."""
    return (f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} "
            f"{when.year:04d} {when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000")


def _date(value: str | None) -> str:
    """The Date to write for the message's first Date value: in UTC, since the sender's
    own offset hints at where they are."""
    if value:
        try:
            when = _parse_date(_clean(value))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return _format_utc(when.astimezone(UTC))
        except Exception:  # unparseable or out of range: fall through to now
            pass
    return format_datetime(datetime.now(UTC))


def _extra(name: str, value: str) -> bytes:
    if not _FIELD_NAME.fullmatch(name) or name.lower() in _RELAY_HEADERS:
        raise ValueError(f"extra header name not allowed: {name!r}")
    value = _clean(value)
    return _structured(name, value) if value.isascii() else _line(name, encode_words(value))


def rewrite(msg: Message, plan: RewritePlan) -> bytes:
    """The message to forward: allow-listed headers set by the relay, addresses replaced.

    `msg` is parsed with policy compat32 and is not modified. Returns CRLF-terminated bytes.
    Malformed input never raises; an invalid `plan.extra_headers` name raises ValueError.
    """
    head, body = rewrite_parts(msg, plan)
    return b"".join([head, *body])


def rewrite_parts(msg: Message, plan: RewritePlan) -> tuple[bytes, list[Chunk]]:
    """`rewrite` in pieces: the header block with its blank line, and the body's chunks
    (base64 runs of big attachments stay views of the received bytes, see relay.parsing)."""
    r = AddressReplacer(plan.replacements)
    mime: Headers = []
    date = subject = None  # the first of each
    for k, v in msg.raw_items():
        key = k.strip().lower()
        if key in _MIME_NAMES:
            mime.append((k, sub_header_value(k, v, r)))
        elif key == "date":
            date = v if date is None else date
        elif key == "subject":
            subject = v if subject is None else subject
    mime, body = render_body(msg, mime, r)

    sender = _mailbox(plan.from_name, plan.from_addr, r)
    out = [_line("From", sender),
           _line("To", _mailbox(plan.to_name, plan.to_addr, r)),
           _line("Reply-To", sender),
           _line("Message-ID", [_msg_id(plan.message_id)])]
    in_reply_to = _msg_id(plan.in_reply_to)
    if in_reply_to:
        out.append(_line("In-Reply-To", [in_reply_to]))
    refs = [ref for ref in map(_msg_id, plan.references) if ref]
    if refs:
        out.append(_line("References", refs))
    out.append(_line("Date", [_date(date)]))
    if subject is not None:
        out.append(_unstructured("Subject", r.sub_text(decode_words(raw_text(subject)))))
    out.append(b"MIME-Version: 1.0\r\n")
    for name in _MIME_HEADERS:
        value = header_get(mime, name)
        if value is not None and _clean(value, keep_surrogates=True):
            out.append(_structured(name, value, keep_surrogates=True))
    out.extend(_extra(name, value) for name, value in plan.extra_headers)
    out.append(b"\r\n")
    return b"".join(out), body
