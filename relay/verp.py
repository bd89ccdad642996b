"""Signed relay addresses: VERP bounce addresses and the buyers' opt-out/opt-in addresses.

Each carries an HMAC under the relay secret, so none can be forged; bounce addresses also
expire, so an old one cannot be replayed forever.

    bounce-<message id>-<expiry day, base 36>-<mac>@<alias domain>
    optout-<buyer alias token>-<mac>@<alias domain>   (and optin-...)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

BOUNCE_DAYS = 14  # DSNs arrive after the next hop's retries, up to about five days
MAC_CHARS = 10  # 50 bits: a forgery needs one guess in 10^15 per try

_SHAPE = re.compile(r"(bounce|optout|optin)-([a-z0-9-]+)")


# Pairs of lower-case RFC 4648 base32 digits by 10-bit value: the MAC is the first
# MAC_CHARS digits of base64.b32encode(digest), which is pure Python in 3.11 and encodes
# all 32 bytes; 50 bits are 7 bytes, read as one integer and cut into 5 pairs here.
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]
assert MAC_CHARS == 10  # _mac reads exactly 50 bits


def _mac(secret: str, text: str) -> str:
    digest = hmac.digest(bytes.fromhex(secret), text.encode(), hashlib.sha256)
    bits = int.from_bytes(digest[:7], "big") >> 6
    pairs = _B32_PAIRS
    return (pairs[bits >> 40] + pairs[(bits >> 30) & 1023] + pairs[(bits >> 20) & 1023]
            + pairs[(bits >> 10) & 1023] + pairs[bits & 1023])


def _today() -> int:
    return int(time.time() // 86400)


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


@dataclass(frozen=True)
class ControlAddress:
    """A relay address that is not an alias. ``valid`` is False for forgeries and expired ones.

    kind: "bounce" (``value`` = message record id) or "optout"/"optin" (``value`` = the
    buyer alias token it is bound to).
    """

    kind: str
    value: str
    valid: bool


def bounce_address(secret: str, record_id: str, domain: str, today: int | None = None) -> str:
    expiry = _b36((today if today is not None else _today()) + BOUNCE_DAYS)
    mac = _mac(secret, f"bounce:{record_id}:{expiry}")
    return f"bounce-{record_id}-{expiry}-{mac}@{domain}"


def optout_address(secret: str, buyer_token: str, domain: str, kind: str = "optout") -> str:
    return f"{kind}-{buyer_token}-{_mac(secret, f'{kind}:{buyer_token}')}@{domain}"


def parse(secret: str, local: str, today: int | None = None) -> ControlAddress | None:
    """The control address a local part names, or None when it is not shaped like one."""
    match = _SHAPE.fullmatch(local.lower())
    if match is None:
        return None
    kind, rest = match.groups()
    parts = rest.split("-")
    if kind == "bounce":
        if len(parts) != 3:
            return ControlAddress(kind, "", False)
        record_id, expiry, mac = parts
        good = hmac.compare_digest(mac, _mac(secret, f"bounce:{record_id}:{expiry}"))
        try:
            fresh = int(expiry, 36) >= (today if today is not None else _today())
        except ValueError:
            fresh = False
        return ControlAddress(kind, record_id, good and fresh)
    if len(parts) != 2:
        return ControlAddress(kind, "", False)
    token, mac = parts
    return ControlAddress(kind, token, hmac.compare_digest(mac, _mac(secret, f"{kind}:{token}")))
