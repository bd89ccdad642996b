"""Decoding a parsed message into the text the content rules read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from functools import lru_cache

from selectolax.lexbor import LexborHTMLParser, LexborNode


def decoded_subject(msg: Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    subject = str(raw)
    if "=?" not in subject:
        return subject  # no encoded word: decode_header and make_header give it back as is
    try:
        return str(make_header(decode_header(subject)))
    except (ValueError, LookupError, UnicodeError):
        return str(raw)


def _decode_payload(part: Message, charset: str | None) -> str:
    """A leaf part's payload as text: transfer encoding undone, then the declared charset.

    An unknown or wrong charset falls back to utf-8 with replacement characters, so a
    malformed part is still read rather than skipped (skipping would hide its content).
    """
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = b""
    if isinstance(payload, str):  # defensive: some parsers hand back str for 8bit bodies
        return payload
    try:
        return payload.decode(charset or "utf-8", errors="replace")
    except (LookupError, UnicodeError):
        return payload.decode("utf-8", errors="replace")


def _content_type(part: Message) -> tuple[str, str | None]:
    """``part.get_content_type()`` and ``part.get_content_charset()``.

    Both read only the first Content-Type value, and parsing its parameters is most of
    what reading a part costs; the values repeat from message to message, so each is
    parsed once. A value that is not a plain str (a header object of another policy, or
    one holding undecodable bytes) is parsed every time, as before.
    """
    value = part.get("Content-Type")
    if type(value) is not str:
        return part.get_content_type(), part.get_content_charset()
    return _parsed_content_type(value)


@lru_cache(maxsize=256)
def _parsed_content_type(value: str) -> tuple[str, str | None]:
    probe = Message()
    probe["Content-Type"] = value
    return probe.get_content_type(), probe.get_content_charset()


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
# What the walk passes over: invisible elements, comments, doctypes and empty text nodes
# (selectolax names the nodes that are not elements "-text", "-comment", ...).
_SKIP = _INVISIBLE | {"-text", "-comment", "-doctype", "-document"}
_MAX_DEPTH = 200  # deeper nesting is flattened rather than recursed into


def _render(node: LexborNode, out: list[str], depth: int = 0) -> None:
    for child in node.iter(include_text=True):
        # One property read for most nodes: text_content is None for all but a text node.
        text = child.text_content
        if text is not None:
            out.append(text)
            continue
        tag = child.tag
        if tag is None:  # a node that is neither text nor element, or a nameless element
            if not child.is_element_node:
                continue
            tag = ""
        elif tag in _SKIP:
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


_BLANK_LINES = re.compile(r"\n\n\n+")  # a literal start: `re` skips to it, "\n{3,}" cannot
# What str.strip() takes from a line besides the spaces, tabs and the like that
# _tidy has already made one " ": when none is in the text, a line's strip() is the
# removal of the " " before or after a newline.
_OTHER_SPACES = ("\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
                 "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def squeeze(text: str, spaces: str) -> str:
    """``text`` with each run of " " and the characters of ``spaces`` made one " ".

    C-level passes only, several times cheaper than a regex or a split: each character
    of ``spaces`` is made a space, then a pass halves every run of spaces. `in` is a
    memchr, and free for a character wider than any of the text's."""
    for space in spaces:
        if space in text:
            text = text.replace(space, " ")
    while "  " in text:
        text = text.replace("  ", " ")
    return text


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
    text = squeeze(text, "\t\r\f\v")  # [ \t\r\f\v]+ made " ": no run holds a newline
    if any(space in text for space in _OTHER_SPACES):
        text = "\n".join(map(str.strip, text.split("\n")))
    else:  # a line holds at most one " " at either end now
        text = text.replace(" \n", "\n").replace("\n ", "\n")
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


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
        ctype, charset = _content_type(part)
        maintype = ctype.split("/")[0]
        # Any text/* leaf is read (text/plain, text/html, and odd ones a client may still
        # show), and so is a "multipart" or "message" leaf: a container the parser could
        # not split, whose raw text a lenient client may display. Other types (PDF,
        # images, ...) are attachments with no readable text here.
        if maintype not in ("text", "multipart", "message"):
            continue
        text = _decode_payload(part, charset)
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
