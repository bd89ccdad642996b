"""Outbound DKIM: the relay's keys and the signatures on every forwarded message.

dkimpy does the canonicalization and builds the DKIM-Signature header; the private-key
operation goes through ``cryptography`` (OpenSSL) instead of dkimpy's pure-Python RSA,
which costs about 7 ms per signature, is not constant-time and re-parses the PEM key on
every call. Keys are loaded once, when the ``Signer`` is built.

``Signer.sign`` follows ``dkim.DomainSigner.gen_header`` step by step, so for the same
message, key and timestamp it produces exactly the bytes ``dkim.sign`` would (RSA PKCS#1
v1.5 is deterministic); tests/test_dkim.py checks that.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from relay.config import Config, ConfigError
from relay.dkim_body import relaxed_body_hash

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

RSA_BITS = 2048
MIN_RSA_BITS = 1024  # RFC 8301: verifiers reject less
RSA_SHA256 = b"rsa-sha256"
ED25519_SHA256 = b"ed25519-sha256"
ED25519_SUFFIX = ".ed25519"

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


class DkimKeyError(ConfigError):
    """A key file that is unreadable or of the wrong kind: a configuration error, so
    the CLI and start-up report it in one line like any other."""


class SigningError(ValueError):
    """The message cannot be signed (no From header, unparsable header block)."""


# -- keys --------------------------------------------------------------------------------


def ed25519_key_path(rsa_key_path: str | os.PathLike) -> Path:
    """Where the optional Ed25519 key lives: next to the RSA key, ``.ed25519`` appended."""
    return Path(f"{os.fspath(rsa_key_path)}{ED25519_SUFFIX}")


def generate_rsa_pem(bits: int = RSA_BITS) -> bytes:
    # PKCS#1 ("BEGIN RSA PRIVATE KEY"): read by cryptography, dkimpy and opendkim alike
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def generate_ed25519_pem() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_private_key(path: str | os.PathLike, pem: bytes, *, overwrite: bool = False) -> None:
    """Write ``pem`` to ``path`` with mode 0600, atomically.

    The file is created 0600 from the start (never chmod'ed after the secret is in it),
    written and fsync'ed under a temporary name, then linked into place: without
    ``overwrite`` an existing key is never replaced (FileExistsError), even by a race.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name exists: no clobbering
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                if path.exists():
                    raise FileExistsError(f"{path} exists") from None
                os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_private_key(path: str | os.PathLike) -> PrivateKey:
    """Load an RSA or Ed25519 private key (PEM; Ed25519 also as dkimpy's base64 seed).

    This is the expensive step (about 30 ms: OpenSSL checks an RSA key), done once.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read DKIM key {path}: {exc.strerror or exc}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:  # `dknewkey --ktype ed25519` writes the 32-byte seed in base64
            key = ed25519.Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"DKIM key {path}: not an unencrypted private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(f"DKIM key {path}: RSA-{key.key_size} is too short")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DkimKeyError(f"DKIM key {path}: {type(key).__name__} is neither RSA nor Ed25519")


def public_key_value(key: PrivateKey) -> str:
    """The TXT record value that publishes the public half of ``key``."""
    pub = key.public_key()
    if isinstance(pub, ed25519.Ed25519PublicKey):  # RFC 8463: the raw 32 bytes
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def txt_strings(value: str, size: int = 255) -> list[str]:
    """``value`` cut into the <=255-byte character-strings of one TXT record."""
    return [value[i:i + size] for i in range(0, len(value), size)] or [""]


# -- signing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """One loaded private key and the selector its public key is published under."""

    selector: str
    key: PrivateKey

    def __post_init__(self) -> None:
        if not _SELECTOR.fullmatch(self.selector):  # it goes verbatim into s= and DNS
            raise DkimKeyError(f"dkim.selector: not a DNS label sequence: {self.selector!r}")

    @property
    def algorithm(self) -> bytes:
        return ED25519_SHA256 if isinstance(self.key, ed25519.Ed25519PrivateKey) else RSA_SHA256

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign the SHA-256 of the canonicalized headers (RFC 6376 3.7, RFC 8463 3)."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(digest)  # Ed25519 over the 32-byte hash, as RFC 8463 says
        return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


class Signer:
    """Signs messages for ``domain``: RSA always, plus Ed25519 when that key exists.

    Immutable after construction and the OpenSSL key objects are safe to share, so one
    Signer may sign from several threads at once (``asyncio.to_thread(signer.sign, data)``).
    """

    def __init__(self, domain: str, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("a Signer needs at least one key")
        try:  # d= carries A-labels
            self.domain = domain.strip().rstrip(".").lower().encode("idna").decode("ascii")
        except UnicodeError:
            raise DkimKeyError(f"server.alias_domain: not a valid domain: {domain!r}") from None
        self.keys: tuple[SigningKey, ...] = tuple(keys)

    @classmethod
    def from_config(cls, config: Config) -> Signer | None:
        """The relay's signer, or None when the RSA key file does not exist.

        Raises DkimKeyError for a key that exists but cannot be used.
        """
        section = config["dkim"]
        path = Path(section["key"])
        if not path.exists():
            return None
        key = load_private_key(path)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"DKIM key {path}: expected an RSA key (Ed25519 goes in "
                               f"{ed25519_key_path(path)})")
        keys = [SigningKey(section["selector"], key)]
        ed_path = ed25519_key_path(path)
        if ed_path.exists():
            ed_key = load_private_key(ed_path)
            if not isinstance(ed_key, ed25519.Ed25519PrivateKey):
                raise DkimKeyError(f"DKIM key {ed_path}: expected an Ed25519 key")
            keys.append(SigningKey(f"{section['selector']}-ed25519", ed_key))
        return cls(config.alias_domain, keys)

    @property
    def selectors(self) -> tuple[str, ...]:
        return tuple(k.selector for k in self.keys)

    def sign(self, message: bytes, *, timestamp: int | None = None,
             linesep: bytes = b"\r\n") -> bytes:
        """The DKIM-Signature header field(s) to prepend to ``message``.

        One field per key in the order of ``keys`` (``from_config`` puts RSA first, as
        verifiers that check only the topmost signature know RSA), each folded and ending
        in ``linesep`` (CRLF for SMTP). Raises SigningError for an unsignable message.
        """
        headers, body = _parse(message)
        return self._fields(headers, hashlib.sha256(_CANON.canonicalize_body(body)).digest(),
                            timestamp, linesep)

    def sign_parts(self, head: bytes, body: Iterable[bytes | memoryview], *,
                   timestamp: int | None = None, linesep: bytes = b"\r\n") -> bytes:
        """`sign` for a message in pieces (relay.rewrite.rewrite_parts): the header block
        with its blank line, and the body's chunks, which are hashed without joining."""
        headers, _ = _parse(head)
        return self._fields(headers, relaxed_body_hash(body), timestamp, linesep)

    def _fields(self, headers: list, body_digest: bytes, timestamp: int | None,
                linesep: bytes) -> bytes:
        include = signed_header_names(headers)
        bodyhash = base64.b64encode(body_digest)
        cheaders = _CANON.canonicalize_headers(headers)
        stamp = str(int(time.time()) if timestamp is None else int(timestamp)).encode()
        domain = self.domain.encode("ascii")
        return b"".join(
            _signature_field(key, domain, stamp, include, cheaders, bodyhash, linesep)
            for key in self.keys)


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


def _signature_field(key: SigningKey, domain: bytes, stamp: bytes, include: list[bytes],
                     cheaders: list, bodyhash: bytes, linesep: bytes) -> bytes:
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
    namelen = len(_HEADER_NAME)
    unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=namelen,
                         linesep=b"\r\n")
    unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)  # b= empty while hashing
    h = hashlib.sha256()
    dkim.hash_headers(h, _CANON, cheaders, include, (_HEADER_NAME, b" " + unsigned),
                      dict(fields))
    fields[-1] = (b"b", base64.b64encode(key.sign_digest(h.digest())))
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + linesep, namelen=namelen,
                      linesep=linesep)
    return _HEADER_NAME + b": " + value
