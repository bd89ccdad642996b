"""Address checks: email-validator's syntax rules, no DNS, one normalized form to compare."""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


class BadAddress(ValueError):
    """An address that email-validator refuses; the message says why in one line."""


@lru_cache(maxsize=16384)
def normalize(address: str) -> str:
    """The comparable form of an address: validated, then lower-cased as a whole.

    Local parts are case-sensitive in theory only; every provider a marketplace meets
    treats them case-insensitively, and so does the relay. Cached: validation costs
    about 60 µs and the same few senders write again and again (errors are not cached).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in address):
        raise BadAddress(f"invalid address {address!r}: control characters")
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise BadAddress(f"invalid address {address!r}: {exc}") from None
    return checked.normalized.lower()


def split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain
