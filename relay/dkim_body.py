"""The DKIM body hash (relaxed, RFC 6376 3.4.4) over a message body in chunks.

dkimpy canonicalizes the body as one bytes object; a forwarded message here is a list
of chunks in which a big attachment's base64 is a view of the received bytes (see
relay.parsing), and joining them would copy the message once more. The result is the
same hash as long as no chunk boundary falls inside a CRLF or a run of spaces and tabs
(relay.rewrite_body cuts only where a base64 run starts or ends, between a line's end and
base64 text): then each chunk is canonicalized alone, and the empty lines at the end are
counted across chunks.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
# Runs to make one space. A lone space is one already: matching each of a text's hundreds
# of them (as dkimpy's [\t ]+ does) was most of the hash's time.
_WSP = re.compile(rb"[\t ]{2,}|\t")
_WSP_ANYWHERE = re.compile(rb"[\t ]")


def _relaxed(chunk: bytes | memoryview) -> bytes | memoryview:
    if isinstance(chunk, memoryview):
        if not _WSP_ANYWHERE.search(chunk):
            return chunk  # base64 lines: nothing to change, and no copy
        chunk = bytes(chunk)
    # Most text has only single spaces between words: three substring searches in C tell,
    # where the regexes would stop at every space. (find, not "in": bytes.__contains__
    # first tries the needle as an int, and formats the TypeError it then drops.)
    if chunk.find(b"\t") < 0 and chunk.find(b"  ") < 0 and chunk.find(b" \r\n") < 0:
        return chunk
    return _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", chunk))


def _empty_lines_at_end(chunk: bytes | memoryview) -> int:
    n, end = 0, len(chunk)
    while end >= 2 and chunk[end - 2:end] == b"\r\n":
        n, end = n + 1, end - 2
    return n


def relaxed_body_hash(chunks: Iterable[bytes | memoryview]) -> bytes:
    """SHA-256 of the relaxed canonical form of the chunks' concatenation."""
    digest = hashlib.sha256()
    held = 0  # CRLFs at the end so far: dropped if nothing but CRLFs follows them
    wrote = False
    for chunk in chunks:
        canonical = _relaxed(chunk)
        if not canonical:
            continue
        crlfs = _empty_lines_at_end(canonical)
        if 2 * crlfs == len(canonical):
            held += crlfs
            continue
        if held:
            digest.update(b"\r\n" * held)
        digest.update(memoryview(canonical)[:len(canonical) - 2 * crlfs])
        held, wrote = crlfs, True
    if wrote:
        digest.update(b"\r\n")  # a non-empty body ends with exactly one CRLF
    return digest.digest()
