"""Alias tokens: keyed HMAC of the pair, so they are stable, unguessable and unlinkable.

A token reveals nothing about who is behind it; without the secret nobody can compute
the token of another pair. Revocation bumps the generation, which yields a fresh token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

TOKEN_BITS = 100  # 20 base32 characters


def new_secret() -> str:
    return secrets.token_hex(32)


def alias_token(secret: str, pair_id: int, role: str, generation: int = 0) -> str:
    mac = hmac.new(bytes.fromhex(secret), f"alias:{pair_id}:{role}:{generation}".encode(),
                   hashlib.sha256).digest()
    return base64.b32encode(mac).decode()[: TOKEN_BITS // 5].lower()
