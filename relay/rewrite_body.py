"""Body side of the anonymizing rewrite: the MIME walk that renders every part.

Its one job is walking a parsed message's parts and serializing them with every real
address replaced: leaves are decoded, searched and re-encoded, containers are framed like
email.generator frames them. Address matching is in `relay.rewrite_addresses`; charset,
encoded-word and transfer-encoding helpers are in `relay.rewrite_mime`; the names other
modules used from here are re-exported.

Pure functions, no I/O. `relay.rewrite` builds the top-level header block and calls
`render_body` for everything below it. Parts are serialized here by hand, not by
email.generator: the generator re-folds headers and mangles "From " lines, and parts that
hold no real address must reach the recipient byte for byte.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from relay.parsing import Chunk, Part
from relay.rewrite_addresses import AddressReplacer, sub_header_value
from relay.rewrite_mime import (
    _IDENTITY_CTES,
    Headers,
    _codec,
    _cte,
    _decode_cte,
    _encode_cte,
    _header_set,
    _params_message,
    boundary_of,
    content_charset,
    content_type,
    crlf,
    decode_words,
    encode_words,
    header_get,
    leaf_kind,
    raw_text,
    to_bytes,
)

__all__ = [
    "AddressReplacer",
    "Headers",
    "crlf",
    "decode_words",
    "encode_words",
    "header_get",
    "raw_text",
    "render_body",
    "render_part",
    "sub_header_value",
    "to_bytes",
]

_Item = Chunk | tuple[Message, bool]  # output, or a part still to render
_NO_REPLACEMENT = AddressReplacer({})


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


# -- leaves ----------------------------------------------------------------------------

_ICAL_UNFOLD = re.compile(r"\r?\n[ \t]")
_LINE_SPLIT = re.compile(r"(\r\n|\n|\r)")


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
                 ctype: str) -> tuple[Headers, list[Chunk]]:
    if isinstance(part, Part) and part.runs:  # a base64 file: its runs pass as received
        return headers, [s if isinstance(s, memoryview) else crlf(to_bytes(s))
                         for s in part.segments()]
    headers, body = _render_text_leaf(part, headers, r, ctype)
    return headers, [body]


def _render_text_leaf(part: Message, headers: Headers, r: AddressReplacer,
                      ctype: str) -> tuple[Headers, bytes]:
    # Not get_payload(): compat32 decodes 8-bit bytes with 'replace' there, losing them.
    payload = part._payload
    raw = to_bytes(payload if isinstance(payload, str) else "")
    cte = _cte(headers)
    kind = leaf_kind(part, ctype)
    if kind == "opaque":
        # Attachments pass unchanged, but an unencoded one is still searched as bytes: some
        # readers show it as text (a reused boundary, say). 8bit/binary stay un-normalized.
        if cte in _IDENTITY_CTES:
            raw, _ = r.subn_bytes(raw)
        return headers, (raw if cte in ("8bit", "binary") else crlf(raw))

    data = _decode_cte(raw, cte)
    new_data, new_charset = None, None
    charset = None if kind == "container" else content_charset(part)
    if not _nothing_to_replace(data, charset, r):
        if kind != "container":
            new_data, new_charset = _rewrite_text(data, charset, kind == "folded", r)
        # Bytes-level pass: undecodable text, a wrong charset label, or a container we
        # could not split. Addresses are ASCII-compatible in every charset mail uses.
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


# Codecs in which "@", "%" and "&" come from those bytes only (ASCII supersets, one byte
# a character or, in UTF-8, only bytes over 0x7F in a multi-byte one).
_ASCII_SUPERSETS = frozenset({
    "utf-8", "ascii", *(f"iso8859-{n}" for n in (*range(1, 12), *range(13, 17))),
    *(f"cp{n}" for n in range(1250, 1259)), "koi8-r", "koi8-u",
})


def _nothing_to_replace(data: bytes, charset: str | None, r: AddressReplacer) -> bool:
    """Whether _rewrite_text and the bytes-level pass would both find nothing, known
    from the bytes: in these codecs the text has an "@", "%" or "&" only if they do."""
    return (_codec(charset) or "utf-8") in _ASCII_SUPERSETS and r.finds_nothing_in(data)


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
            boundary = boundary_of(value)
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
    # Not get_payload(): for a leaf it checks the whole text for surrogates, to no use here.
    payload = part._payload
    ctype = content_type(part)
    if isinstance(payload, list):
        if ctype == "message/delivery-status":
            return headers, [_render_delivery_status(payload, r)]
        if ctype.split("/")[0] == "multipart":  # get_content_maintype()
            return headers, _multipart_items(part, payload, headers, r)
        cte = _cte(headers)
        if cte in ("base64", "quoted-printable"):
            return headers, [_render_encoded_message(payload, cte, r)]
        return headers, [(m, True) for m in payload]
    return _render_leaf(part, headers, r, ctype)


def _drain(items: list[_Item], r: AddressReplacer) -> list[Chunk]:
    """Serialize with an explicit stack: the parser accepts nesting deeper than recursion.

    Bytes are gathered into one chunk; a base64 run stays a chunk of its own (a view).
    """
    chunks: list[Chunk] = []
    out = bytearray()
    stack = items[::-1]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out += item
            continue
        if isinstance(item, memoryview):
            if out:
                chunks.append(bytes(out))
                out = bytearray()
            chunks.append(item)
            continue
        node, attached = item
        raw = node.raw_items()
        if attached:
            raw = [(k, v) for k, v in raw if _attached_allowed(k)]
        headers, body = _body_items(node, [(k, sub_header_value(k, v, r)) for k, v in raw], r)
        stack.extend(reversed(body))
        stack.append(_header_block(headers) + b"\r\n")
    if out or not chunks:
        chunks.append(bytes(out))
    return chunks


def render_body(part: Message, headers: Headers,
                r: AddressReplacer) -> tuple[Headers, list[Chunk]]:
    """The body of `part` with every real address replaced, and its (updated) headers.

    `headers` are the part's headers as the caller will write them; a leaf whose encoding
    or charset had to change comes back with Content-Transfer-Encoding/Content-Type updated.
    The body comes in chunks: joined, they are the body's bytes.
    """
    headers, items = _body_items(part, headers, r)
    return headers, _drain(items, r)


def render_part(part: Message, r: AddressReplacer, attached: bool = False) -> bytes:
    """A whole body part (or an attached message when `attached`): headers, blank line, body."""
    return b"".join(_drain([(part, attached)], r))
