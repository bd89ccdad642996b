"""Outbound DKIM: the signatures on every forwarded message.

dkimpy does the canonicalization and builds the DKIM-Signature header; the private-key
operation goes through ``cryptography`` (OpenSSL) instead of dkimpy's pure-Python RSA,
which costs about 7 ms per signature, is not constant-time and re-parses the PEM key on
every call. In the daemon the keys are not even in this process: a keyholder child
(``relay.keyholder``) holds them and signs the header hash it is sent.

``Signer.sign`` follows ``dkim.DomainSigner.gen_header`` step by step, so for the same
message, key and timestamp it produces exactly the bytes ``dkim.sign`` would (RSA PKCS#1
v1.5 is deterministic); tests/test_dkim.py checks that.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dkim
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy

from relay.config import Config
from relay.dkim_body import relaxed_body_hash
from relay.dkim_keys import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimKeyError,
    PrivateKey,
    algorithm_of,
    ed25519_key_path,
    load_private_key,
    sign_digest,
)

if TYPE_CHECKING:
    from relay.keyholder import KeyHolder

#: Headers the relay itself sets on a forwarded message; only these are signed, so a
#: header the next hop adds (Received, Return-Path, ...) cannot break the signature.
SIGNED_HEADERS = (
    "from", "to", "reply-to", "subject", "date", "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", "list-unsubscribe",
)
#: Listed once more than present, so a second From cannot be added after signing.
OVERSIGNED = ("from",)

_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_HEADER_NAME = b"DKIM-Signature"
_CANON = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_C_VALUE = _CANON.to_c_value()
_WSP_RUN = re.compile(rb"[\t ]+")
_WANTED = frozenset(name.encode() for name in SIGNED_HEADERS)
_OVERSIGNED = tuple(name.encode() for name in OVERSIGNED)
_EOL = re.compile(rb"\r?\n")  # dkim.rfc822_parse's line split
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")  # and its field name
_PLACEHOLDER = b"0" * 60  # b= while folding the unsigned field: it gets a line of its own
_LINE = 71  # dkim.fold's width after the first line


class SigningError(ValueError):
    """The message cannot be signed (no From header, unparsable header block)."""


@dataclass(frozen=True)
class SigningKey:
    """A selector and its key: the private key itself, or (``key`` None) only which kind
    it is, when the keyholder process holds it."""

    selector: str
    key: PrivateKey | None
    held_algorithm: bytes = RSA_SHA256  # what a held key is; read only when key is None

    def __post_init__(self) -> None:
        if not _SELECTOR.fullmatch(self.selector):  # it goes verbatim into s= and DNS
            raise DkimKeyError(f"dkim.selector: not a DNS label sequence: {self.selector!r}")

    @property
    def algorithm(self) -> bytes:
        return self.held_algorithm if self.key is None else algorithm_of(self.key)

    def sign_digest(self, digest: bytes) -> bytes:
        if self.key is None:
            raise SigningError(f"the {self.selector} key is held by the keyholder process")
        return sign_digest(self.key, digest)


@dataclass(frozen=True)
class _Unsigned:
    """A DKIM-Signature field waiting for its b= (the signature of ``digest``)."""

    key: SigningKey
    fields: list[tuple[bytes, bytes]]
    digest: bytes
    folded: bytes  # the field folded with CRLF up to its b=, which starts a line; or b""


class Signer:
    """Signs messages for ``domain``: RSA always, plus Ed25519 when that key exists.

    Immutable after construction and the OpenSSL key objects are safe to share, so one
    Signer may sign from several threads at once (``asyncio.to_thread(signer.sign, data)``).
    With a ``holder`` the private keys are in the keyholder process: sign with ``fields``.
    """

    def __init__(self, domain: str, keys: Sequence[SigningKey],
                 holder: KeyHolder | None = None) -> None:
        if not keys:
            raise ValueError("a Signer needs at least one key")
        try:  # d= carries A-labels
            self.domain = domain.strip().rstrip(".").lower().encode("idna").decode("ascii")
        except UnicodeError:
            raise DkimKeyError(f"server.alias_domain: not a valid domain: {domain!r}") from None
        self.keys: tuple[SigningKey, ...] = tuple(keys)
        self.holder = holder

    @classmethod
    def from_config(cls, config: Config, *, keyholder: bool = False) -> Signer | None:
        """The relay's signer, or None when the RSA key file does not exist.

        Raises DkimKeyError for a key that exists but cannot be used. With ``keyholder``
        (the daemon, when ``[dkim] keyholder`` is on) no key is read here: the keyholder
        process reads them when it starts.
        """
        section = config["dkim"]
        path = Path(section["key"])
        if not path.exists():
            return None
        ed_path = ed25519_key_path(path)
        selectors = (section["selector"], f"{section['selector']}-ed25519")
        if keyholder:
            from relay.keyholder import KeyHolder

            keys = [SigningKey(selectors[0], None)]
            paths = [path]
            if ed_path.exists():
                keys.append(SigningKey(selectors[1], None, ED25519_SHA256))
                paths.append(ed_path)
            return cls(config.alias_domain, keys, KeyHolder(paths))
        key = load_private_key(path)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"DKIM key {path}: expected an RSA key (Ed25519 goes in "
                               f"{ed_path})")
        keys = [SigningKey(selectors[0], key)]
        if ed_path.exists():
            ed_key = load_private_key(ed_path)
            if not isinstance(ed_key, ed25519.Ed25519PrivateKey):
                raise DkimKeyError(f"DKIM key {ed_path}: expected an Ed25519 key")
            keys.append(SigningKey(selectors[1], ed_key))
        return cls(config.alias_domain, keys)

    @property
    def selectors(self) -> tuple[str, ...]:
        return tuple(k.selector for k in self.keys)

    async def start(self) -> None:
        """Start the keyholder, if there is one: a key it cannot use fails here."""
        if self.holder is not None:
            await self.holder.start()

    async def close(self) -> None:
        if self.holder is not None:
            await self.holder.close()

    def sign(self, message: bytes, *, timestamp: int | None = None,
             linesep: bytes = b"\r\n") -> bytes:
        """The DKIM-Signature header field(s) to prepend to ``message``.

        One field per key in the order of ``keys`` (``from_config`` puts RSA first, as
        verifiers that check only the topmost signature know RSA), each folded and ending
        in ``linesep`` (CRLF for SMTP). Raises SigningError for an unsignable message.
        Only for keys in this process; see ``fields``.
        """
        headers, body = _parse(message)
        digest = hashlib.sha256(_CANON.canonicalize_body(body)).digest()
        return self._signed_here(headers, digest, timestamp, linesep)

    def sign_parts(self, head: bytes, body: Iterable[bytes | memoryview], *,
                   timestamp: int | None = None, linesep: bytes = b"\r\n") -> bytes:
        """`sign` for a message in pieces (relay.rewrite.rewrite_parts): the header block
        with its blank line, and the body's chunks, which are hashed without joining."""
        return self._signed_here(_head_fields(head), relaxed_body_hash(body), timestamp,
                                 linesep)

    async def fields(self, head: bytes, body_digest: bytes, *, timestamp: int | None = None,
                     linesep: bytes = b"\r\n") -> bytes:
        """The field(s) for a header block (with its blank line) whose body's relaxed hash
        is ``body_digest`` (``relay.dkim_body.relaxed_body_hash``); the private-key
        operations go to the keyholder when there is one."""
        headers = _head_fields(head)
        if self.holder is None:
            return self._signed_here(headers, body_digest, timestamp, linesep)
        out = []
        # _unsigned keeps the order of keys, which is the keyholder's numbering too
        for index, u in enumerate(self._unsigned(headers, body_digest, timestamp)):
            out.append(_signed(u, await self.holder.sign(index, u.digest), linesep))
        return b"".join(out)

    def _signed_here(self, headers: list, body_digest: bytes, timestamp: int | None,
                     linesep: bytes) -> bytes:
        """The fields, signed with the keys in this process."""
        return b"".join(_signed(u, u.key.sign_digest(u.digest), linesep)
                        for u in self._unsigned(headers, body_digest, timestamp))

    def _unsigned(self, headers: list, body_digest: bytes,
                  timestamp: int | None) -> list[_Unsigned]:
        include = _included([name.lower() for name, _ in headers])
        signed = _selected(headers, include)
        bodyhash = base64.b64encode(body_digest)
        stamp = str(int(time.time()) if timestamp is None else int(timestamp)).encode()
        domain = self.domain.encode("ascii")
        return [_unsigned_field(key, domain, stamp, include, signed, bodyhash)
                for key in self.keys]


def _parse(message: bytes) -> tuple[list, bytes]:
    try:
        return dkim.rfc822_parse(message)
    except (dkim.DKIMException, IndexError) as exc:  # IndexError: leading continuation
        raise _unsignable(exc) from None


def _head_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of ``head`` as ``dkim.rfc822_parse(head)[0]`` has them (and
    refused alike), without its regex per line and the body it joins: only the header
    block of a message is parsed for its fields."""
    try:
        return _fields_of(head)
    except (dkim.DKIMException, IndexError) as exc:
        raise _unsignable(exc) from None


def _fields_of(message: bytes) -> list[tuple[bytes, bytes]]:
    if message.count(b"\n") == message.count(b"\r\n"):  # CRLF only: split in C
        lines = message.split(b"\r\n")
    else:
        lines = _EOL.split(message)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if not line:  # the blank line: the body follows
            break
        if line[0] in (0x09, 0x20):
            name, value = headers[-1]  # IndexError for a leading continuation, as dkimpy
            headers[-1] = (name, value + line + b"\r\n")
            continue
        colon = line.find(b":", 1)
        if colon > 0 and line[:colon].replace(b"-", b"").isalnum():  # the usual name
            headers.append((line[:colon], line[colon + 1:] + b"\r\n"))
            continue
        m = _FIELD_NAME.match(line)
        if m is not None:
            headers.append((m.group(1), line[m.end():] + b"\r\n"))
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError(f"Unexpected characters in RFC822 header: {line}")
    return headers


def _unsignable(exc: Exception) -> SigningError:
    return SigningError(f"cannot sign: {str(exc).splitlines()[0][:80]}")


def signed_header_names(headers: Sequence[Sequence[bytes]]) -> list[bytes]:
    """The h= list: the relay's headers in message order, From once more (oversigned)."""
    return _included([name.lower() for name, _ in headers])


def _included(names: list[bytes]) -> list[bytes]:
    """signed_header_names of headers with these lower-cased names."""
    include = [name for name in names if name in _WANTED]
    if b"from" not in include:
        raise SigningError("cannot sign: the message has no From header")
    include += [name for name in _OVERSIGNED if name in include]
    return include


def _unsigned_field(key: SigningKey, domain: bytes, stamp: bytes, include: list[bytes],
                    signed: list[bytes], bodyhash: bytes) -> _Unsigned:
    # The same fields, order and folding as dkim.DKIM.sign + DomainSigner.gen_header;
    # only the private-key operation differs.
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm),
        (b"c", _C_VALUE),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", stamp),
        (b"h", b" : ".join(include)),
        (b"bh", bodyhash),
        (b"b", _PLACEHOLDER),  # pushes b= onto its own folded line
    ]
    unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields),
                         namelen=len(_HEADER_NAME), linesep=b"\r\n")
    # b= empty while hashing: what dkim.RE_BTAG.sub(b"\\1", unsigned) leaves, when b= is
    # the last tag, alone on its line, and the placeholder was not folded
    folded = unsigned[:-len(_PLACEHOLDER)]
    if not (unsigned.endswith(_PLACEHOLDER) and folded.endswith(b"\r\n b=")):
        folded, unsigned = b"", dkim.RE_BTAG.sub(b"\\1", unsigned)
    # the signature's own field last, without its CRLF (RFC 6376 3.7)
    digest = hashlib.sha256(b"".join(signed) + b"dkim-signature:"
                            + _relaxed_value(b" " + (folded or unsigned))[:-2]).digest()
    return _Unsigned(key, fields, digest, folded)


def _selected(headers: Sequence[Sequence[bytes]], include: list[bytes]) -> list[bytes]:
    """The relaxed "name:value CRLF" of each field ``include`` names, in its order, each
    name taken from the bottom up (dkim.select_headers over the canonical headers)."""
    names = [name.lower().rstrip() for name, _ in headers]
    unused: dict[bytes, list[int]] = {}  # positions of each name not selected yet
    for i, name in enumerate(names):
        unused.setdefault(name, []).append(i)
    out: list[bytes] = []
    for wanted in include:
        left = unused.get(wanted)
        if left:
            i = left.pop()  # the lowest one left
            out.append(names[i] + b":" + _relaxed_value(headers[i][1]))
    return out


def _relaxed_value(value: bytes) -> bytes:
    """RFC 6376 3.4.2, as dkimpy's Relaxed.canonicalize_headers does it (unfold, WSP runs
    to one space, strip, CRLF), with each regex run only when it has something to do:
    dkimpy's two regexes per field were most of a signature's time besides the RSA.
    (find, not "in": bytes.__contains__ first tries the needle as an int, and formats
    the TypeError it then drops.)"""
    stripped = value.strip()
    if stripped.find(b"\n") < 0 and stripped.find(b"\t") < 0 and stripped.find(b"  ") < 0:
        return stripped + b"\r\n"  # no fold, tab or run of spaces inside: only the ends
    if value.find(b"\n") >= 0:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if value.find(b"\t") >= 0 or value.find(b"  ") >= 0:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip() + b"\r\n"


def _signed(unsigned: _Unsigned, signature: bytes, linesep: bytes) -> bytes:
    b = base64.b64encode(signature)
    if unsigned.folded and linesep == b"\r\n" and len(b) >= len(_PLACEHOLDER):
        # dkim.fold cuts the signed field where it cut the unsigned one up to its b= (a
        # b= value holds no space for it to cut at, neither does the placeholder, and it
        # is no shorter), then the b= line, which has no space either, every 71 characters
        rest = b"b=" + b + linesep
        return (_HEADER_NAME + b": " + unsigned.folded[:-2]
                + b"\r\n ".join([rest[i:i + _LINE] for i in range(0, len(rest), _LINE)]))
    fields = [*unsigned.fields[:-1], (b"b", b)]
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + linesep,
                      namelen=len(_HEADER_NAME), linesep=linesep)
    return _HEADER_NAME + b": " + value
