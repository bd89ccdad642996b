"""relay.verp computes its MACs without base64.b32encode (pure Python in 3.11): addresses
already handed out must keep working, so they must be byte-identical to the old encoding."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

from relay import verp


def old_mac(secret: str, text: str) -> str:
    digest = hmac.digest(bytes.fromhex(secret), text.encode(), hashlib.sha256)
    return base64.b32encode(digest).decode()[:verp.MAC_CHARS].lower()


def test_macs_are_those_of_b32encode():
    rng = random.Random(5)
    for _ in range(20_000):
        secret = rng.randbytes(32).hex()
        text = f"bounce:{rng.randbytes(rng.randrange(0, 24)).hex()}:{rng.randrange(10**6)}"
        assert verp._mac(secret, text) == old_mac(secret, text)


def test_addresses_are_unchanged_and_parse():
    rng = random.Random(6)
    for _ in range(2_000):
        secret = rng.randbytes(32).hex()
        record, token = rng.randbytes(8).hex(), rng.randbytes(10).hex()
        bounce = verp.bounce_address(secret, record, "relay.example", today=20_000)
        expiry = verp._b36(20_000 + verp.BOUNCE_DAYS)
        mac = old_mac(secret, f"bounce:{record}:{expiry}")
        assert bounce == f"bounce-{record}-{expiry}-{mac}@relay.example"
        optout = verp.optout_address(secret, token, "relay.example")
        assert optout == f"optout-{token}-{old_mac(secret, f'optout:{token}')}@relay.example"
        assert verp.parse(secret, bounce.partition("@")[0], today=20_000).valid
        assert verp.parse(secret, optout.partition("@")[0]).valid
