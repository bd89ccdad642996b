"""The read-only facts a policy sees. The pipeline fetches everything up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from functools import cached_property
from typing import Any

from aliasdb.models import Alias, Buyer, Order, Seller

SELLER_TO_BUYER = "seller_to_buyer"
BUYER_TO_SELLER = "buyer_to_seller"
BOUNCE = "bounce"  # a DSN (or auto-reply) to one of our VERP addresses
CONTROL = "control"  # a buyer's opt-out or opt-in message
MESSAGE_FLOWS = (SELLER_TO_BUYER, BUYER_TO_SELLER)
ALL_FLOWS = (SELLER_TO_BUYER, BUYER_TO_SELLER, BOUNCE, CONTROL)

# RFC 3834 Auto-Submitted, and the markers older vacation programs use instead
_AUTO_PRECEDENCE = {"auto_reply", "bulk", "junk", "list"}
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoreply-From", "X-Mail-Autoreply",
                 "X-Vacation")


@dataclass(frozen=True)
class Envelope:
    mail_from: str  # normalized, "" for the null sender
    rcpt_to: str  # normalized
    peer: str = ""
    auth_seller: str | None = None  # seller id authenticated by SMTP AUTH, if any


@dataclass(frozen=True)
class Settings:
    alias_domain: str = "relay.example"
    cutoff_days: int = 30
    strikes_to_suspend: int = 3
    strike_window_days: int = 30
    max_attachment_bytes: int = 10 * 1024 * 1024
    content_rules: Any = None  # policies.content.ContentRules, loaded by the config
    contact_reasons: Any = None  # policies.reasons.ContactReasons
    verify_inbound: str = "off"  # "require" | "record" | "off"
    max_hops: int = 30  # Received headers; more means a mail loop
    customer_service: str = ""  # the marketplace's address (fulfilment = marketplace)


@dataclass(frozen=True, eq=False)
class Context:
    stage: str  # "rcpt" | "data"
    envelope: Envelope
    settings: Settings
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    alias: Alias | None = None
    direction: str | None = None
    seller: Seller | None = None
    buyer: Buyer | None = None
    seller_senders: frozenset[str] = frozenset()  # enabled addresses, normalized
    orders: tuple[Order, ...] = ()  # orders of this pair
    recent_strikes: int = 0  # strikes inside the window, before this message
    review_requests: frozenset[str] = frozenset()  # order ids already asked for a review
    message: Message | None = None  # parsed at DATA
    from_addresses: tuple[str, ...] = ()  # normalized addresses of the From header
    reply_to_addresses: tuple[str, ...] = ()
    is_reply: bool = False  # answers a message the buyer sent through the relay
    dkim: Any = None  # relay.dkim.DkimResult of the MX listener's check, if one ran
    control: Any = None  # relay.verp.ControlAddress when the recipient is one
    recent_auto_replies: int = 0  # auto-replies forwarded in this conversation today

    @cached_property
    def subject(self) -> str:
        from policies.text import decoded_subject

        return decoded_subject(self.message) if self.message is not None else ""

    @cached_property
    def text(self) -> str:
        """Visible text of every text part (HTML reduced to text), decoded."""
        from policies.text import visible_text

        return visible_text(self.message) if self.message is not None else ""

    @cached_property
    def auto_reply(self) -> bool:
        """Whether the message says it was sent by a program (vacation, auto-responder)."""
        msg = self.message
        if msg is None:
            return False
        auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
        if auto and not auto.startswith("no"):
            return True
        if str(msg.get("Precedence", "")).strip().lower() in _AUTO_PRECEDENCE:
            return True
        return any(msg.get(name) is not None for name in _AUTO_HEADERS)

    @cached_property
    def named_orders(self) -> tuple[Order, ...]:
        """Orders of this pair whose ids the subject or text names."""
        from policies.text import order_ids

        mine = {o.id: o for o in self.orders}
        return tuple(mine[i] for i in order_ids(self.subject, self.text) if i in mine)

    @cached_property
    def referenced_orders(self) -> tuple[Order, ...]:
        """The orders a message is about: those it names, else (for a reply) the pair's."""
        if self.named_orders:
            return self.named_orders
        return self.orders if self.is_reply else ()
