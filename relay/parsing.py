"""One parser for the whole relay: compat32 is correct here and about 4x cheaper than
email.policy.default (the rewrite writes headers itself, so it needs no policy objects).

Big attachments are not copied into the parsed tree. Before parsing, every long run of
whole lines made only of base64 characters is replaced by one placeholder line, and the
parser reads what is left (a few KB). That cannot change the tree the parser builds:
such lines hold no "--" (no MIME boundary), no ":" and no leading space (no header, no
continuation), and neither does the placeholder. After parsing, a run that landed in an
attachment the rewrite passes on unchanged (a base64 file, see
`relay.rewrite_mime.leaf_kind`) stays a placeholder, and `Part.runs` maps it to a
memoryview of the received bytes, which the rewrite, the DKIM body hash and delivery then
pass on without copying. A run anywhere else (a text part, an encoded message/rfc822, a
preamble) is put back into the tree before anyone reads it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser

from relay.rewrite_mime import (
    _IDENTITY_CTES,
    _cte,
    _raw_content_type,
    boundary_of,
    content_type,
    leaf_kind,
)

Chunk = bytes | memoryview  # of a message on its way: a memoryview is one of its runs

# Runs shorter than this are parsed like the rest: placeholders would cost more than a copy.
MIN_RUN_BYTES = 32 * 1024
_BASE64_RUN = re.compile(rb"(?m)^(?:[A-Za-z0-9+/=]++\r\n)++")
_BASE64_CHAR = re.compile(r"[A-Za-z0-9+/]")


@dataclass(frozen=True)
class Run:
    data: memoryview  # the run as received, without its last CRLF
    chars: int        # base64 characters in it, padding excluded


class Part(Message):
    """A compat32 Message whose payload may hold placeholders for runs (see the module)."""

    runs: dict[str, Run] | None = None
    placeholder: re.Pattern[str] = re.compile("(?!)")  # this message's, set with runs

    def _pieces(self) -> list[str | Run]:
        """The raw payload in order: text between placeholders, and the runs."""
        payload = self._payload if isinstance(self._payload, str) else ""
        if not self.runs:
            return [payload]
        pieces = self.placeholder.split(payload)
        return [self.runs[p] if i % 2 else p for i, p in enumerate(pieces)]

    def segments(self) -> list[str | memoryview]:
        """The raw payload in order: text between placeholders, and the runs' bytes."""
        return [p.data if isinstance(p, Run) else p for p in self._pieces()]

    def decoded_size(self) -> int:
        """The decoded payload's size, counted without decoding the runs."""
        if not self.runs:
            return len(self.get_payload(decode=True) or b"")
        chars = sum(p.chars if isinstance(p, Run) else len(_BASE64_CHAR.findall(p))
                    for p in self._pieces())
        return chars * 3 // 4


_parser = BytesParser(policy=email_policy.compat32)
_part_parser = BytesParser(_class=Part, policy=email_policy.compat32)


# Text runs: the feedparser handles a message line by line in Python (~1 us a line), yet
# most lines of a body only ever become payload text. A run of such lines is parsed as one
# placeholder line and put back afterwards. The tree is the same because (see
# email.feedparser) a line changes the parser's state only when it is empty or header-like
# (in a header block), when it starts with "--" (a boundary) or, in
# message/delivery-status, when it is empty (the end of a body). So, unless the message
# may hold a delivery-status, a run is: a first line that is neither empty nor
# header-like (in a header block it ends the headers just like the placeholder does, and
# from then on every line is body), then any lines up to the next one starting with "--".
# Every line of a run ends in CRLF and holds no other CR or LF: the parser splits lines at
# either.
_HEADER_LIKE = re.compile(r"(?:(?:From |[\x21-\x39\x3b-\x7e]*:|[ \t])[^\r\n]*(?:\r\n|\r|\n)"
                          r"|\r\n|\r|\n)*")  # what a run may not start with, line by line
_TEXT_TOKEN = re.compile("RELAYTXT[0-9A-F]{16}N[0-9]+X")  # fixed: compiling per message costs
MIN_RUN_LINES = 3  # a placeholder and its restore cost about as much as two lines
_str_parser = _parser.parser  # BytesParser decodes to str and calls this


def _text_runs(text: str) -> list[tuple[int, int]]:
    """Spans of the runs: between two lines starting with "--", after a header block."""
    if "delivery-status" in text.lower():
        return []
    # The parser ends a line at a bare CR or LF too, where a "--" line below would not be
    # seen: such a text (relay.wire refuses it on the way in) is parsed line by line.
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        return []
    # starts of the lines that start with "--", then the end of the text
    ends = [0] if text.startswith("--") else []
    i = text.find("\n--")
    while i >= 0:
        ends.append(i + 1)
        i = text.find("\n--", i + 1)
    ends.append(len(text))
    spans, pos = [], 0
    for end in ends:
        if pos < end:
            start = _HEADER_LIKE.match(text, pos, end).end()
            stop = text.rfind("\r\n", start, end) + 2  # the run ends with a whole line
            if stop - start > 2:
                run = text[start:stop]
                lines = run.count("\r\n")
                if lines >= MIN_RUN_LINES and run.count("\r") == lines == run.count("\n"):
                    spans.append((start, stop))
        # the next segment starts after the "--" line: after its LF, a line start anyway
        pos = text.find("\n", end) + 1 or len(text)
    return spans


def _parse_text(text: str) -> Message:
    """compat32 parse of the decoded message: the common shape read directly (see
    `_simple`), anything else by the parser, its text runs parsed as placeholders."""
    simple = _simple(text, Message)
    if simple is not None:
        return simple
    spans = _text_runs(text)
    if not spans:
        return _str_parser.parsestr(text)
    # A random tag per message: text a sender writes can never name one of its runs.
    tag = f"RELAYTXT{secrets.token_hex(8).upper()}N"
    skeleton: list[str] = []
    texts: dict[str, str] = {}
    last = 0
    for i, (start, end) in enumerate(spans):
        token = f"{tag}{i}X"
        skeleton += [text[last:start], token, "\r\n"]
        texts[token] = text[start:end - 2]
        last = end
    skeleton.append(text[last:])
    msg = _str_parser.parsestr("".join(skeleton))

    def restore(value: str) -> str:
        # a token of another tag is text the sender wrote: it stays
        return (_TEXT_TOKEN.sub(lambda m: texts.get(m.group(0), m.group(0)), value)
                if tag in value else value)

    stack = [msg]
    while stack:  # tokens can only be in payloads, preambles and epilogues
        part = stack.pop()
        payload = part._payload
        if isinstance(payload, list):
            if part.preamble is not None:
                part.preamble = restore(part.preamble)
            if part.epilogue is not None:
                part.epilogue = restore(part.epilogue)
            stack.extend(payload)
        elif isinstance(payload, str):
            part._payload = restore(payload)
    return msg


# The common shape, read without the feedparser. The parser reads a message line by line
# in Python; most messages are a header block and a body, or a multipart whose parts are
# the same again, and for those the tree it builds follows from where the header blocks
# and the boundary lines are, which C-level searches find. `_simple` builds that tree for
# messages of this shape and gives up (None) on anything else, which the parser then
# reads: a line the parser would take for a defect, a message/* part (delivery-status
# blocks, attached messages), multipart/digest (its parts' default type), a bare CR or
# LF next to a boundary line (the parser ends lines there too), two boundary lines in a
# row, no closing boundary. Each rule below is the parser's (email.feedparser) for a
# message of this shape; tests/test_parsing_simple.py compares the trees.
# A header block: fields and their folds, each line ending in CRLF (".*+" is faster than
# "[^\r\n]*+"; a CR inside a line is counted apart), and one field of it.
_FIELDS = re.compile(r"(?:[\x21-\x39\x3b-\x7e]++:.*+(?<=\r)\n(?:[ \t].*+(?<=\r)\n)*+)*+")
_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]++):[ \t]*+(.*+\n(?:[ \t].*+\n)*+)")
_SIMPLE_DEPTH = 8  # deeper multiparts are left to the parser (and its explicit stack)


def _simple(text: str, cls: type[Message]) -> Message | None:
    """The tree compat32's parser builds from ``text`` if it is of the common shape,
    else None. ``cls`` is the message class, as the parser's _class."""
    try:
        return _simple_part(text, 0, len(text), cls, 0)
    except Exception:  # a header value email's accessors choke on: the parser decides
        return None


def _simple_part(text: str, start: int, end: int, cls: type[Message],
                 depth: int) -> Message | None:
    """The part in text[start:end]: header fields, a blank line, the body. ``end`` is
    where the parser sees its end of file (an enclosing boundary line or the end)."""
    if text.startswith("\r\n", start, end):
        head_end = start  # no header fields
    else:
        blank = text.find("\r\n\r\n", start, end)  # the CRLF ending the first blank line
        if blank < 0:
            return None
        head_end = blank + 2
        # not all fields (a defect, or From_), or a CR the parser ends a line at
        if (not _FIELDS.fullmatch(text, start, head_end)
                or text.count("\r", start, head_end) != text.count("\n", start, head_end)):
            return None
    msg = cls()
    # compat32's header_source_parse: value after the colon and its blanks, folds kept
    msg._headers = [(name, value.rstrip("\r\n"))
                    for name, value in _FIELD.findall(text, start, head_end)]
    body = head_end + 2
    ctype = content_type(msg)
    maintype = ctype.partition("/")[0]
    if maintype == "message" or ctype == "multipart/digest":
        return None
    if maintype != "multipart":
        msg._payload = text[body:end]
        return msg
    boundary = boundary_of(_raw_content_type(msg))
    if (not boundary or "\r" in boundary or "\n" in boundary or depth >= _SIMPLE_DEPTH
            or str(msg.get("content-transfer-encoding", "8bit")).lower()
            not in ("7bit", "8bit", "binary")):
        return None
    lines = _boundary_lines(text, body, end, "--" + boundary)
    if lines is None or not lines or lines[0][2]:  # no start boundary
        return None
    first = lines[0][0]
    # the CRLF before a boundary line is the boundary's (RFC 2046)
    msg.preamble = text[body:first - 2] if first > body else None
    parts = []
    for i, (_, part_start, close) in enumerate(lines):
        if close:
            break
        if i + 1 == len(lines):  # no closing boundary
            return None
        part_end = lines[i + 1][0]
        if part_start == part_end:  # two boundary lines in a row: the parser skips one
            return None
        part = _simple_part(text, part_start, part_end, cls, depth + 1)
        if part is None:
            return None
        if isinstance(part._payload, list):  # its epilogue: "" or ending in CRLF
            part.epilogue = part.epilogue[:-2] if part.epilogue else None
        else:
            part._payload = part._payload[:-2]  # "" or ending in CRLF
        parts.append(part)
    msg._payload = parts
    msg.epilogue = text[lines[len(parts)][1]:end]  # after the closing boundary line
    return msg


def _boundary_lines(text: str, start: int, end: int,
                    sep: str) -> list[tuple[int, int, bool]] | None:
    """(start, end with the CRLF, closing?) of each line in text[start:end] the parser
    takes for a boundary line of ``sep``; None if a bare CR or LF next to one could make
    the parser see other lines than these."""
    found = []
    i = text.find(sep, start, end)
    while i >= 0:
        before = text[i - 1] if i > start else "\n"
        if before == "\r" or (before == "\n" and i > start and text[i - 2] != "\r"):
            return None  # after a bare CR or LF: a line starts there for the parser
        if before == "\n":
            eol = text.find("\n", i, end)
            line_end = end if eol < 0 else eol + 1
            rest = text[i + len(sep):line_end]
            if rest.endswith("\r\n"):
                rest = rest[:-2]
            if "\r" in rest or "\n" in rest:
                return None
            # the parser's boundary regex: "--" to close, then only blanks
            close = rest.startswith("--")
            if not (rest[2:] if close else rest).strip(" \t"):
                found.append((i, line_end, close))
        i = text.find(sep, i + 1, end)
    return found


def parse(raw: bytes | bytearray) -> Message:
    if len(raw) < MIN_RUN_BYTES:
        return _parse_text(raw.decode("ascii", "surrogateescape"))
    spans = [m.span() for m in _BASE64_RUN.finditer(raw) if m.end() - m.start() >= MIN_RUN_BYTES]
    if not spans:
        return _parse_text(raw.decode("ascii", "surrogateescape"))
    # A random tag per message: text a sender writes can never name one of its runs.
    tag = f"RELAYRUN{secrets.token_hex(8).upper()}N"
    view = memoryview(raw)
    skeleton: list[bytes | memoryview] = []
    runs: dict[str, Run] = {}
    last = 0
    for i, (start, end) in enumerate(spans):
        token = f"{tag}{i}X"
        skeleton += [view[last:start], token.encode("ascii"), b"\r\n"]
        chars = end - start - 2 * raw.count(b"\n", start, end) - raw.count(b"=", start, end)
        runs[token] = Run(view[start:end - 2], chars)
        last = end
    skeleton.append(view[last:])
    data = b"".join(skeleton)
    msg = (_simple(data.decode("ascii", "surrogateescape"), Part)
           or _part_parser.parsebytes(data))
    _place(msg, runs, re.compile(f"({re.escape(tag)}[0-9]+X)"))
    return msg


def _place(msg: Message, runs: dict[str, Run], token: re.Pattern[str]) -> None:
    """Keep each run that sits in a passed-through attachment; put the others back."""
    def restore(text: str | None) -> str | None:
        if text is None or not token.search(text):
            return text
        return token.sub(lambda m: runs[m.group(0)].data.tobytes().decode("ascii"), text)

    stack: list[tuple[Message, bool]] = [(msg, False)]  # (part, inside an encoded message)
    while stack:
        part, encoded = stack.pop()
        payload = part._payload
        cte = _cte(part.raw_items())
        if isinstance(payload, list):
            inner = encoded or (part.get_content_maintype() != "multipart"
                                and cte not in _IDENTITY_CTES)
            part.preamble, part.epilogue = restore(part.preamble), restore(part.epilogue)
            stack.extend((sub, inner) for sub in payload)
            continue
        if not isinstance(payload, str) or not token.search(payload):
            continue
        if (not encoded and cte == "base64" and isinstance(part, Part)
                and leaf_kind(part, part.get_content_type()) == "opaque"):
            part.runs = {t: runs[t] for t in token.findall(payload)}
            part.placeholder = token
        else:
            part._payload = restore(payload)
