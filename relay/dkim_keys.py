"""The relay's DKIM keys: made, written, loaded and published here; used for signing in
``relay.dkim_sign`` and, by default, only inside the keyholder process (``relay.keyholder``).

This module imports nothing of dkimpy, so the keyholder starts quickly.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relay.config import ConfigError

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

RSA_BITS = 2048
MIN_RSA_BITS = 1024  # RFC 8301: verifiers reject less
RSA_SHA256 = b"rsa-sha256"
ED25519_SHA256 = b"ed25519-sha256"
ED25519_SUFFIX = ".ed25519"


class DkimKeyError(ConfigError):
    """A key file that is unreadable or of the wrong kind: a configuration error, so
    the CLI and start-up report it in one line like any other."""


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


def algorithm_of(key: PrivateKey) -> bytes:
    return ED25519_SHA256 if isinstance(key, ed25519.Ed25519PrivateKey) else RSA_SHA256


def sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    """Sign the SHA-256 of the canonicalized headers (RFC 6376 3.7, RFC 8463 3)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(digest)  # Ed25519 over the 32-byte hash, as RFC 8463 says
    return key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
