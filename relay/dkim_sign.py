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
_WSP_RUN = re.compile(rb"[\t ]+")


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
        headers, _ = _parse(head)
        return self._signed_here(headers, relaxed_body_hash(body), timestamp, linesep)

    async def fields(self, head: bytes, body_digest: bytes, *, timestamp: int | None = None,
                     linesep: bytes = b"\r\n") -> bytes:
        """The field(s) for a header block (with its blank line) whose body's relaxed hash
        is ``body_digest`` (``relay.dkim_body.relaxed_body_hash``); the private-key
        operations go to the keyholder when there is one."""
        headers, _ = _parse(head)
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
        include = signed_header_names(headers)
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
        raise SigningError(f"cannot sign: {str(exc).splitlines()[0][:80]}") from None


def signed_header_names(headers: Sequence[Sequence[bytes]]) -> list[bytes]:
    """The h= list: the relay's headers in message order, From once more (oversigned)."""
    wanted = {name.encode() for name in SIGNED_HEADERS}
    include = [name.lower() for name, _ in headers if name.lower() in wanted]
    if b"from" not in include:
        raise SigningError("cannot sign: the message has no From header")
    include += [name.encode() for name in OVERSIGNED if name.encode() in include]
    return include


def _unsigned_field(key: SigningKey, domain: bytes, stamp: bytes, include: list[bytes],
                    signed: list[bytes], bodyhash: bytes) -> _Unsigned:
    # The same fields, order and folding as dkim.DKIM.sign + DomainSigner.gen_header;
    # only the private-key operation differs.
    fields = [
        (b"v", b"1"),
        (b"a", key.algorithm),
        (b"c", _CANON.to_c_value()),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", stamp),
        (b"h", b" : ".join(include)),
        (b"bh", bodyhash),
        (b"b", b"0" * 60),  # placeholder: pushes b= onto its own folded line
    ]
    unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields),
                         namelen=len(_HEADER_NAME), linesep=b"\r\n")
    unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)  # b= empty while hashing
    h = hashlib.sha256()
    for field in signed:
        h.update(field)
    # the signature's own field last, without its CRLF (RFC 6376 3.7)
    h.update(b"dkim-signature:" + _relaxed_value(b" " + unsigned)[:-2])
    return _Unsigned(key, fields, h.digest())


def _selected(headers: Sequence[Sequence[bytes]], include: list[bytes]) -> list[bytes]:
    """The relaxed "name:value CRLF" of each field ``include`` names, in its order, each
    name taken from the bottom up (dkim.select_headers over the canonical headers)."""
    names = [name.lower().rstrip() for name, _ in headers]
    out: list[bytes] = []
    below: dict[bytes, int] = {}
    for wanted in include:
        i = below.get(wanted, len(headers))
        while i > 0:
            i -= 1
            if names[i] == wanted:
                out.append(names[i] + b":" + _relaxed_value(headers[i][1]))
                break
        below[wanted] = i
    return out


def _relaxed_value(value: bytes) -> bytes:
    """RFC 6376 3.4.2, as dkimpy's Relaxed.canonicalize_headers does it (unfold, WSP runs
    to one space, strip, CRLF), with each regex run only when it has something to do:
    dkimpy's two regexes per field were most of a signature's time besides the RSA."""
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip() + b"\r\n"


def _signed(unsigned: _Unsigned, signature: bytes, linesep: bytes) -> bytes:
    fields = [*unsigned.fields[:-1], (b"b", base64.b64encode(signature))]
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + linesep,
                      namelen=len(_HEADER_NAME), linesep=linesep)
    return _HEADER_NAME + b": " + value
