"""Body side of the anonymizing rewrite: address matching, RFC 2047 words, the MIME walk.

Pure functions, no I/O. `relay.rewrite` builds the top-level header block and calls
`render_body` for everything below it. Parts are serialized here by hand, not by
email.generator: the generator re-folds headers and mangles "From " lines, and parts that
hold no real address must reach the recipient byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterable, Mapping
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from email.utils import quote as _quote_param
from urllib.parse import quote as _pct_quote

Headers = list[tuple[str, str]]
_Item = bytes | tuple[Message, bool]  # output bytes, or a part still to render

# Named HTML entities an author (or an HTML editor) may use for address characters.
_NAMED_ENTITIES = {"@": ("commat",), ".": ("period",), "_": ("lowbar", "UnderBar"),
                   "+": ("plus",)}


def _char_alternatives(ch: str) -> list[str]:
    """Ways one address character appears in mail text: literal, HTML entity, %-escape."""
    alts = []
    # the address matches in any letter case, so its escapes must too (&#83; is "S")
    for variant in dict.fromkeys((ch, ch.lower(), ch.upper())):
        code = ord(variant)
        alts += [f"&\\#0*{code}(?:;|(?![0-9]))", f"&\\#x0*{code:x}(?:;|(?![0-9a-f]))"]
        alts += [f"&{name};" for name in _NAMED_ENTITIES.get(variant, ())]
        alts.append("".join(f"%{b:02x}" for b in variant.encode("utf-8")))
    return alts


class AddressReplacer:
    """One compiled regex over every real address, for str and for raw bytes.

    Each character may be literal or escaped, so `jane&#64;mail.example` and
    `mailto:jane%40mail.example` are caught without decoding the HTML or URL first.
    Matching is deliberately not anchored at word boundaries: a longer address that
    merely ends with a real one is mangled rather than risk a leak.
    """

    def __init__(self, replacements: Mapping[str, str]) -> None:
        # Longest first, so that of two keys starting at one position the longer wins.
        keys = sorted({k.lower() for k in replacements if k}, key=len, reverse=True)
        lowered = {k.lower(): v for k, v in replacements.items() if k}
        self._aliases = [lowered[k] for k in keys]
        self._aliases_b = [a.encode("utf-8") for a in self._aliases]
        if not keys:
            self._re = self._bre = None
            return
        str_groups, bytes_groups = [], []
        for i, key in enumerate(keys):
            s_chars, b_chars = [], []
            for ch in key:
                alts = _char_alternatives(ch)
                s_chars.append("(?:" + "|".join([re.escape(ch), *alts]) + ")")
                literal = re.escape(ch.encode("utf-8")).decode("latin-1")
                b_chars.append("(?:" + "|".join([literal, *alts]) + ")")
            str_groups.append(f"(?P<a{i}>{''.join(s_chars)})")
            bytes_groups.append(f"(?P<a{i}>{''.join(b_chars)})")
        self._re = re.compile("|".join(str_groups), re.IGNORECASE)
        self._bre = re.compile("|".join(bytes_groups).encode("latin-1"), re.IGNORECASE)

    def subn_text(self, text: str) -> tuple[str, int]:
        if self._re is None:
            return text, 0
        return self._re.subn(lambda m: self._aliases[int(m.lastgroup[1:])], text)

    def sub_text(self, text: str) -> str:
        return self.subn_text(text)[0]

    def subn_bytes(self, data: bytes) -> tuple[bytes, int]:
        if self._bre is None:
            return data, 0
        return self._bre.subn(lambda m: self._aliases_b[int(m.lastgroup[1:])], data)


_NO_REPLACEMENT = AddressReplacer({})


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


# -- header values ---------------------------------------------------------------------

_PARAM_HEADERS = ("content-type", "content-disposition")


def _format_param(key: str, value: str) -> str:
    if value.isascii() and value.isprintable():
        return f'{key}="{_quote_param(value)}"'
    return f"{key}*=utf-8''{_pct_quote(value, safe='')}"


def _sub_params(value: str, r: AddressReplacer) -> str:
    """Content-Type/Disposition with RFC 2231 continuations or encoded-word params.

    An address split over `filename*0*=` / `filename*1*=` is invisible to a plain search,
    so look at the decoded parameters and rebuild the header only when one matches.
    """
    if ";" not in value:
        return value
    try:
        params = _params_message("Content-Type", value).get_params()
    except Exception:  # malformed parameters: the plain search still runs afterwards
        return value
    if not params:
        return value
    decoded, changed = [], False
    for key, val in params[1:]:
        text = collapse_rfc2231_value(val) if isinstance(val, tuple) else val
        if "=?" in text:
            text = decode_words(text)
        text, n = r.subn_text(text)
        changed = changed or bool(n)
        decoded.append((key, text))
    if not changed:
        return value
    return "; ".join([params[0][0], *(_format_param(k, v) for k, v in decoded)])


def _sub_ew_run(run: str, r: AddressReplacer) -> str:
    text, n = r.subn_text(decode_words(run))
    return "\r\n ".join(encode_words(text)) if n else run


def sub_header_value(name: str, value: str, r: AddressReplacer) -> str:
    """Replace real addresses in one raw header value; returns `value` itself if none."""
    if name.strip().lower() in _PARAM_HEADERS:
        value = _sub_params(value, r)
    if "=?" in value:
        value = _EW_RUN.sub(lambda m: _sub_ew_run(m.group(0), r), value)
    new, n = r.subn_text(value)
    return new if n else value


# Headers of an attached message that pass (with substitution): what a mail client shows
# of a forwarded message. Trace, authentication and Autocrypt headers (key material holds
# the address in binary form) are dropped like at the top level.
_ATTACHED_ALLOWED = frozenset({
    "from", "sender", "reply-to", "to", "cc", "date", "subject", "message-id",
    "in-reply-to", "references", "mime-version", "comments", "keywords",
})


def _attached_allowed(name: str) -> bool:
    name = name.strip().lower()
    return name in _ATTACHED_ALLOWED or name.startswith("content-")


def _header_block(headers: Headers) -> bytes:
    return crlf(b"".join(to_bytes(f"{k}: {v}\r\n") for k, v in headers))


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


# -- leaves ----------------------------------------------------------------------------

# Line-folded formats: an address can be split by a fold (RFC 5545 3.1, RFC 6350 3.2).
_FOLDED_TYPES = frozenset({"text/calendar", "text/x-vcalendar", "text/vcard", "text/x-vcard",
                           "text/directory", "application/ics"})
_TEXTUAL_APP = frozenset({"application/json", "application/xml", "application/xhtml+xml",
                          "application/javascript", "application/x-javascript",
                          "application/ecmascript", "application/rtf", "application/x-vcard"})
_TEXT_EXTS = (".txt", ".csv", ".tsv", ".htm", ".html", ".xml", ".json", ".md", ".log",
              ".eml", ".rtf")
_FOLDED_EXTS = (".ics", ".vcs", ".vcf")
_ICAL_UNFOLD = re.compile(r"\r?\n[ \t]")
_LINE_SPLIT = re.compile(r"(\r\n|\n|\r)")


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        return ""
    if isinstance(name, tuple):
        name = collapse_rfc2231_value(name)
    return decode_words(name).strip().lower()


def _leaf_kind(part: Message, ctype: str) -> str:
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


def _ical_fold(text: str) -> str:
    pieces = _LINE_SPLIT.split(text)
    for i in range(0, len(pieces), 2):
        line = pieces[i]
        if len(line.encode("utf-8", "surrogateescape")) <= 75:
            continue
        chunks, cur, size, limit = [], [], 0, 75
        for ch in line:
            n = len(ch.encode("utf-8", "surrogateescape"))
            if cur and size + n > limit:
                chunks.append("".join(cur))
                cur, size, limit = [], 0, 74  # continuation lines start with a space
            cur.append(ch)
            size += n
        chunks.append("".join(cur))
        pieces[i] = "\r\n ".join(chunks)
    return "".join(pieces)


def _rewrite_text(data: bytes, charset: str | None, folded: bool,
                  r: AddressReplacer) -> tuple[bytes | None, str | None]:
    """Replace in the charset-decoded text: (new bytes or None, new charset or None)."""
    codec = _codec(charset) or "utf-8"  # unknown/missing: UTF-8 + surrogateescape is lossless
    text, errors = None, "strict"
    for errors in ("strict", "surrogateescape"):
        try:
            text = data.decode(codec, errors)
            break
        except Exception:  # UnicodeDecodeError, or a codec that rejects the handler
            continue
    if text is None:
        return None, None
    if folded:
        new, n = r.subn_text(_ICAL_UNFOLD.sub("", text))
        new = _ical_fold(new) if n else new
    else:
        new, n = r.subn_text(text)
    if not n:
        return None, None
    try:
        return new.encode(codec, errors), None
    except Exception:
        return new.encode("utf-8", "surrogateescape"), "utf-8"


def _render_leaf(part: Message, headers: Headers, r: AddressReplacer,
                 ctype: str) -> tuple[Headers, bytes]:
    # Not get_payload(): compat32 decodes 8-bit bytes with 'replace' there, losing them.
    payload = part._payload
    raw = to_bytes(payload if isinstance(payload, str) else "")
    cte = _cte(headers)
    kind = _leaf_kind(part, ctype)
    if kind == "opaque":
        # Attachments pass unchanged, but an unencoded one is still searched as bytes: some
        # readers show it as text (a reused boundary, say). 8bit/binary stay un-normalized.
        if cte in _IDENTITY_CTES:
            raw, _ = r.subn_bytes(raw)
        return headers, (raw if cte in ("8bit", "binary") else crlf(raw))

    data = _decode_cte(raw, cte)
    new_data, new_charset = None, None
    if kind != "container":
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        new_data, new_charset = _rewrite_text(data, charset, kind == "folded", r)
    # Bytes-level pass: undecodable text, a wrong charset label, or a container we could
    # not split. Addresses are ASCII-compatible in every charset mail uses for them.
    fallback, n = r.subn_bytes(data if new_data is None else new_data)
    if n:
        new_data = fallback

    if new_data is None:
        out = raw
    else:
        out, new_cte = _encode_cte(new_data, cte)
        if new_cte:
            headers = _header_set(headers, "Content-Transfer-Encoding", new_cte)
        if new_charset:
            headers = _with_charset(headers, new_charset, ctype)
    # Last line of defence: the encoded form itself (e.g. "base64" that is really plain text).
    if cte not in _IDENTITY_CTES or new_data is not None:
        out, _ = r.subn_bytes(out)
    return headers, crlf(out)


def _with_charset(headers: Headers, charset: str, ctype: str) -> Headers:
    value = header_get(headers, "content-type")
    if value is None:
        return [*headers, ("Content-Type", f'{ctype}; charset="{charset}"')]
    tmp = _params_message("Content-Type", value)
    tmp.set_param("charset", charset)
    return _header_set(headers, "Content-Type", header_get(tmp.raw_items(), "content-type"))


# -- containers ------------------------------------------------------------------------

def _boundary(part: Message, headers: Headers) -> str:
    value = header_get(headers, "content-type")
    boundary = None
    if value is not None:
        try:
            boundary = _params_message("Content-Type", value).get_boundary()
        except Exception:
            boundary = None
    return boundary or part.get_boundary() or ""


def _multipart_items(part: Message, subparts: list[Message], headers: Headers,
                     r: AddressReplacer) -> list[_Item]:
    # Same framing as email.generator, so the parser reads back the same tree.
    delim = b"--" + to_bytes(_boundary(part, headers))
    items: list[_Item] = []
    if part.preamble is not None:
        items.append(crlf(to_bytes(r.sub_text(part.preamble))) + b"\r\n")
    items.append(delim + b"\r\n")
    for i, sub in enumerate(subparts):
        if i:
            items.append(b"\r\n" + delim + b"\r\n")
        items.append((sub, False))
    close = b"\r\n" + delim + b"--\r\n"
    if part.epilogue is not None:
        close += crlf(to_bytes(r.sub_text(part.epilogue)))
    items.append(close)
    return items


def _render_delivery_status(blocks: list[Message], r: AddressReplacer) -> bytes:
    return b"\r\n".join(
        _header_block([(k, sub_header_value(k, v, r)) for k, v in block.raw_items()])
        for block in blocks)


def _render_encoded_message(messages: list[Message], cte: str, r: AddressReplacer) -> bytes:
    """message/rfc822 in base64 or q-p (not allowed by RFC 2046, yet clients decode it)."""
    original = b"".join(render_part(m, _NO_REPLACEMENT) for m in messages)
    inner = BytesParser(policy=compat32).parsebytes(_decode_cte(original, cte))
    out, _ = _encode_cte(render_part(inner, r, attached=True), cte)
    return crlf(out)


def _body_items(part: Message, headers: Headers,
                r: AddressReplacer) -> tuple[Headers, list[_Item]]:
    payload = part.get_payload()
    ctype = part.get_content_type()
    if isinstance(payload, list):
        if ctype == "message/delivery-status":
            return headers, [_render_delivery_status(payload, r)]
        if part.get_content_maintype() == "multipart":
            return headers, _multipart_items(part, payload, headers, r)
        cte = _cte(headers)
        if cte in ("base64", "quoted-printable"):
            return headers, [_render_encoded_message(payload, cte, r)]
        return headers, [(m, True) for m in payload]
    headers, body = _render_leaf(part, headers, r, ctype)
    return headers, [body]


def _drain(items: list[_Item], r: AddressReplacer) -> bytes:
    """Serialize with an explicit stack: the parser accepts nesting deeper than recursion."""
    out = bytearray()
    stack = items[::-1]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        node, attached = item
        raw = node.raw_items()
        if attached:
            raw = [(k, v) for k, v in raw if _attached_allowed(k)]
        headers, body = _body_items(node, [(k, sub_header_value(k, v, r)) for k, v in raw], r)
        stack.extend(reversed(body))
        stack.append(_header_block(headers) + b"\r\n")
    return bytes(out)


def render_body(part: Message, headers: Headers, r: AddressReplacer) -> tuple[Headers, bytes]:
    """The body of `part` with every real address replaced, and its (updated) headers.

    `headers` are the part's headers as the caller will write them; a leaf whose encoding
    or charset had to change comes back with Content-Transfer-Encoding/Content-Type updated.
    """
    headers, items = _body_items(part, headers, r)
    return headers, _drain(items, r)


def render_part(part: Message, r: AddressReplacer, attached: bool = False) -> bytes:
    """A whole body part (or an attached message when `attached`): headers, blank line, body."""
    return _drain([(part, attached)], r)
