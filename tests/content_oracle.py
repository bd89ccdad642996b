"""The content policy's text passes as they were before the speed work of issue 7, kept
as oracles: tests/test_content_oracle.py checks that the fast ones give the same answers.

Each function is the old code unchanged (but for names); what the speed work left as it
was is imported rather than copied.
"""

from __future__ import annotations

import re
import unicodedata
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

from policies.content_off_platform import _digit_run
from policies.content_quoting import (
    _ATTRIBUTION,
    _ORIGINAL,
    _OUTLOOK_HEADER,
    _OUTLOOK_NEXT,
    _QUOTES,
)
from policies.text import _BLOCK, _CELL, _INVISIBLE, _MAX_DEPTH, _is_attachment


def decoded_subject(msg: Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    try:
        return str(make_header(decode_header(str(raw))))
    except (ValueError, LookupError, UnicodeError):
        return str(raw)


def _decode_payload(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = b""
    if isinstance(payload, str):
        return payload
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, UnicodeError):
        return payload.decode("utf-8", errors="replace")


def _render(node: LexborNode, out: list[str], depth: int = 0) -> None:
    for child in node.iter(include_text=True):
        if child.is_text_node:
            out.append(child.text_content or "")
            continue
        if not child.is_element_node:
            continue
        tag = child.tag or ""
        if tag in _INVISIBLE:
            continue
        if depth >= _MAX_DEPTH:
            out.append(" " + child.text(separator=" ") + " ")
            continue
        if tag == "br":
            out.append("\n")
            continue
        if tag == "blockquote":
            inner: list[str] = []
            _render(child, inner, depth + 1)
            quoted = "\n".join("> " + line for line in "".join(inner).splitlines() if line.strip())
            out.append("\n" + quoted + "\n")
            continue
        block = tag in _BLOCK
        if block:
            out.append("\n")
        _render(child, out, depth + 1)
        if tag == "a":
            href = (child.attributes.get("href") or "").strip()
            if href and not href.startswith("#"):
                out.append(f" ({href})")
        if block:
            out.append("\n")
        elif tag in _CELL:
            out.append(" ")


_BLANKS = re.compile(r"[ \t\r\f\v]+")


def html_to_text(html: str) -> str:
    return _tidy(_rendered(html))


def _rendered(html: str) -> str:
    tree = LexborHTMLParser(html)
    root = tree.body or tree.root
    if root is None:
        return ""
    out: list[str] = []
    _render(root, out)
    return "".join(out).replace("\xa0", " ")


def _tidy(text: str) -> str:
    if "  " in text or any(ch in text for ch in "\t\r\f\v"):
        text = _BLANKS.sub(" ", text)
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.strip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


def visible_text(msg: Message) -> str:
    parts: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        maintype = part.get_content_maintype()
        if maintype not in ("text", "multipart", "message"):
            continue
        text = _decode_payload(part)
        if ctype == "text/html":
            text = html_to_text(text)
        elif _is_attachment(part) and not text.strip():
            continue
        parts.append(text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(parts)


_QUOTE_CHARS = str.maketrans(_QUOTES)


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_QUOTE_CHARS)


def strip_quoted(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if "--" in line and _ORIGINAL.match(line):
            break
        colon = ":" in line
        if colon and _OUTLOOK_HEADER.match(line) and any(_OUTLOOK_NEXT.match(nxt)
                                                         for nxt in lines[i + 1:i + 4]):
            break
        if line.lstrip().startswith(">") or (colon and _ATTRIBUTION.match(line)):
            continue
        kept.append(line)
    return "\n".join(kept)


def _flatten(text: str) -> str:
    return " ".join(text.split())


def unprotected_digit_run(text: str, min_digits: int, protected: list[tuple[int, int]]) -> bool:
    """The test _phone_numbers opened with: a run of digits outside every protected span."""
    ascii_run = re.compile(r"[0-9](?:[^0-9]{0,4}[0-9]){" + str(max(min_digits - 1, 0)) + "}")
    runs = ascii_run if text.isascii() else _digit_run(min_digits)
    return any(not any(s <= m.start() and m.end() <= e for s, e in protected)
               for m in runs.finditer(text))


def rule_matches(rules: Any, prepared: str, maybe: Any) -> dict[str, str]:
    """The rule loop of policies.content.evaluate: every rule asked in turn."""
    matches: dict[str, str] = {}
    for rule in rules.rules:
        hit = rule.first_match(prepared, maybe)
        if hit is not None:
            matches[rule.id] = hit
    return matches
