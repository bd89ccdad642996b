"""Decoding a parsed message into the text the content rules read."""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from email.message import Message


def decoded_subject(msg: Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    try:
        return str(make_header(decode_header(str(raw))))
    except (ValueError, LookupError, UnicodeError):
        return str(raw)


def visible_text(msg: Message) -> str:
    """Placeholder until the content work lands: the decoded text/plain parts."""
    parts = []
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                parts.append(payload.decode(charset, errors="replace"))
            except LookupError:
                parts.append(payload.decode("utf-8", errors="replace"))
    return "\n".join(parts)


_ORDER_ID = re.compile(r"(?<![\d-])(\d{3}-\d{7}-\d{7})(?![\d-])")


def order_ids(*texts: str) -> list[str]:
    """Order ids (3-7-7 digits) in the order they first appear."""
    seen: dict[str, None] = {}
    for text in texts:
        for match in _ORDER_ID.finditer(text):
            seen.setdefault(match.group(1))
    return list(seen)
