"""Plain records the store hands out; no SQL here, so policies may import them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Seller:
    id: str
    name: str
    inbox: str | None
    buyer_messages: bool
    fulfilment: str  # "seller" | "marketplace"
    suspended_at: datetime | None
    # every address on file for the seller, blocked ones too, where the look-up read them
    # (the RCPT look-up does, for the rewrite); None: not read
    addresses: frozenset[str] | None = field(default=None, compare=False, repr=False)

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None


@dataclass(frozen=True)
class Buyer:
    id: str
    address: str
    name: str | None
    opted_out: bool
    bouncing: bool = False  # hard bounces flagged the address as not accepting mail


@dataclass(frozen=True)
class Order:
    id: str
    seller_id: str
    buyer_id: str
    category: str | None
    status: str  # pending | shipped | completed | cancelled
    completed_at: datetime | None


@dataclass(frozen=True)
class Pair:
    id: int
    seller_id: str
    buyer_id: str


@dataclass(frozen=True)
class Alias:
    """An alias address resolved: which pair, and which side it stands for."""

    token: str
    pair: Pair
    role: str  # "buyer" (sellers write to it) | "seller" (buyers write to it)
    revoked: bool
    # the pair's live token of each side, {"buyer": ..., "seller": ...}, where the look-up
    # read them (the RCPT look-up does, for the rewrite); None: not read, or a side has none
    pair_tokens: dict[str, str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Recipient:
    """What the RCPT look-up reads in one statement: the alias and the parties behind it."""

    alias: Alias  # with pair_tokens
    seller: Seller | None  # with addresses
    buyer: Buyer | None
    enabled_senders: frozenset[str]  # the seller's addresses with status enabled
