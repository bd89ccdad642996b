"""DKIM for the relay: its keys, outbound signing and inbound verification.

One import for the rest of the relay; the work is in ``relay.dkim_keys`` (keys),
``relay.dkim_sign`` (Signer), ``relay.keyholder`` (the process that holds the keys in the
daemon) and ``relay.dkim_verify`` (resolvers, verify_inbound, alignment).

    signer = Signer.from_config(config, keyholder=True)   # once, at start-up
    await signer.start()                                  # the keyholder reads the keys
    data = await signer.fields(head, relaxed_body_hash(body)) + head + body

    result = await asyncio.to_thread(verify_inbound, raw, from_domain, resolver)
"""

from __future__ import annotations

from pathlib import Path

from relay.config import Config
from relay.dkim_keys import (
    ED25519_SUFFIX,
    DkimKeyError,
    ed25519_key_path,
    generate_ed25519_pem,
    generate_rsa_pem,
    load_private_key,
    public_key_value,
    txt_strings,
    write_private_key,
)
from relay.dkim_sign import OVERSIGNED, SIGNED_HEADERS, Signer, SigningError, SigningKey
from relay.dkim_verify import (
    MAX_SIGNATURES,
    DkimResult,
    DnsResolver,
    DnsTempError,
    Resolver,
    TableResolver,
    aligned,
    organizational_domain,
    verify_inbound,
)

__all__ = [
    "ED25519_SUFFIX", "MAX_SIGNATURES", "OVERSIGNED", "SIGNED_HEADERS",
    "DkimKeyError", "DkimResult", "DnsResolver", "DnsTempError", "Resolver", "Signer",
    "SigningError", "SigningKey", "TableResolver", "aligned", "ed25519_key_path",
    "ensure_key", "generate_ed25519_pem", "generate_rsa_pem", "key_paths",
    "load_private_key", "organizational_domain", "public_key_value", "txt_strings",
    "verify_inbound", "write_private_key",
]


def key_paths(config: Config) -> tuple[Path, Path]:
    """(RSA key, optional Ed25519 key) paths of ``config``."""
    rsa_path = Path(config["dkim"]["key"])
    return rsa_path, ed25519_key_path(rsa_path)


def ensure_key(config: Config) -> bool:
    """Create the RSA-2048 signing key (mode 0600) if it is missing; True when created.

    An existing key is never replaced or checked here (``Signer.from_config`` checks it).
    """
    path, _ = key_paths(config)
    if path.exists():
        return False
    try:
        write_private_key(path, generate_rsa_pem())
    except FileExistsError:  # another `relay init` won the race: keep its key
        return False
    except OSError as exc:
        raise DkimKeyError(f"cannot create DKIM key {path}: {exc.strerror or exc}") from None
    return True
