"""Decoding a parsed message into the text the content rules read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message

from selectolax.lexbor import LexborHTMLParser, LexborNode


def decoded_subject(msg: Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    try:
        return str(make_header(decode_header(str(raw))))
    except (ValueError, LookupError, UnicodeError):
        return str(raw)


def _decode_payload(part: Message) -> str:
    """A leaf part's payload as text: transfer encoding undone, then the declared charset.

    An unknown or wrong charset falls back to utf-8 with replacement characters, so a
    malformed part is still read rather than skipped (skipping would hide its content).
    """
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = b""
    if isinstance(payload, str):  # defensive: some parsers hand back str for 8bit bodies
        return payload
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, UnicodeError):
        return payload.decode("utf-8", errors="replace")


# Elements whose content a reader never sees.
_INVISIBLE = frozenset({"head", "script", "style", "noscript", "template", "title", "meta"})
# Elements that start a new line when rendered.
_BLOCK = frozenset({
    "p", "div", "br", "li", "tr", "table", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "pre", "section", "article", "header", "footer", "address",
    "center", "form", "fieldset", "figure", "figcaption", "main", "nav", "aside", "tbody",
    "thead", "tfoot", "caption",
})
_CELL = frozenset({"td", "th"})
_MAX_DEPTH = 200  # deeper nesting is flattened rather than recursed into


def _render(node: LexborNode, out: list[str], depth: int = 0) -> None:
    for child in node.iter(include_text=True):
        if child.is_text_node:
            out.append(child.text_content or "")
            continue
        if not child.is_element_node:
            continue  # comments and the like
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
            # Quoted reply text: render it like a plain-text quote so the content
            # rules can tell it apart from the sender's own words.
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
            # Keep the destination visible: an off-platform link often hides behind
            # innocent anchor text.
            if href and not href.startswith("#"):
                out.append(f" ({href})")
        if block:
            out.append("\n")
        elif tag in _CELL:
            out.append(" ")


_BLANKS = re.compile(r"[ \t\r\f\v]+")


def html_to_text(html: str) -> str:
    """The visible text of an HTML document, link targets appended as " (href)"."""
    return _tidy(_rendered(html))


def _rendered(html: str) -> str:
    """What :func:`_render` writes for the document, blanks and blank lines as they come."""
    tree = LexborHTMLParser(html)
    root = tree.body or tree.root
    if root is None:
        return ""
    out: list[str] = []
    _render(root, out)
    return "".join(out).replace("\xa0", " ")


def _tidy(text: str) -> str:
    """Blanks in a line made one space, lines stripped, at most one blank line in a row."""
    # One pass over the text, not one per line (a run never holds a newline), and none
    # when every run is already a single space, as in most HTML mail.
    if "  " in text or any(ch in text for ch in "\t\r\f\v"):
        text = _BLANKS.sub(" ", text)
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.strip()
        if line or (lines and lines[-1]):  # runs of blank lines are left by nested blocks
            lines.append(line)
    return "\n".join(lines).strip()


def _is_attachment(part: Message) -> bool:
    disposition = part.get("Content-Disposition")
    return disposition is not None and str(disposition).split(";")[0].strip().lower() == (
        "attachment"
    )


def visible_text(msg: Message) -> str:
    """Visible text of every text part (HTML reduced to what a reader sees, link targets
    kept), after transfer and charset decoding, joined by newlines.

    Works for messages parsed with either ``policy.compat32`` or ``policy.default``.
    Attachments that are not text are skipped; a text attachment is read, since the
    buyer sees it too.
    """
    parts: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        maintype = part.get_content_maintype()
        # Any text/* leaf is read (text/plain, text/html, and odd ones a client may still
        # show), and so is a "multipart" or "message" leaf: a container the parser could
        # not split, whose raw text a lenient client may display. Other types (PDF,
        # images, ...) are attachments with no readable text here.
        if maintype not in ("text", "multipart", "message"):
            continue
        text = _decode_payload(part)
        if ctype == "text/html":
            text = html_to_text(text)
        elif _is_attachment(part) and not text.strip():
            continue
        parts.append(text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n".join(parts)


_URL = re.compile(r"""(?i)\b(?:https?://|www\.)[^\s<>"'()\[\]{}]+""")


def links(msg: Message) -> list[str]:
    """Web addresses in the visible text (HTML link targets included), first-seen order."""
    seen: dict[str, None] = {}
    for match in _URL.finditer(visible_text(msg)):
        seen.setdefault(match.group(0).rstrip(".,;:!?"))
    return list(seen)


_ORDER_ID = re.compile(r"(?<![\d-])(\d{3}-\d{7}-\d{7})(?![\d-])")


def dash_anchored(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` for a pattern whose every match has "-" as its fourth
    character, as an order id does. The regex is tried only where a dash allows it: a scan
    that starts at every position of a long text costs far more than finding its dashes."""
    end = 0
    dash = text.find("-", 3)
    while dash != -1:
        match = pattern.match(text, dash - 3) if dash - 3 >= end else None
        if match:
            yield match
            end = match.end()  # matches are never empty: the next one starts here or later
            dash = text.find("-", max(end + 3, dash + 1))
        else:
            dash = text.find("-", dash + 1)


def order_ids(*texts: str) -> list[str]:
    """Order ids (3-7-7 digits) in the order they first appear."""
    seen: dict[str, None] = {}
    for text in texts:
        for match in dash_anchored(_ORDER_ID, text):
            seen.setdefault(match.group(1))
    return list(seen)
