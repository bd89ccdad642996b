"""Gathering what the store knows about an envelope, so the policies can stay pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.utils import getaddresses
from functools import lru_cache
from typing import Any

from aliasdb import Store
from aliasdb.models import Recipient
from policies.context import (
    BOUNCE,
    BUYER_TO_SELLER,
    CONTROL,
    SELLER_TO_BUYER,
    Context,
    Envelope,
    Settings,
)
from policies.critical import has_important_tag
from policies.relay_control import is_local_address
from relay import verp
from relay.addresses import BadAddress, normalize


def normalize_or_raw(address: str) -> str:
    """The normalized form, or the lower-cased raw text when it is not a valid address.

    An invalid address can then never equal an authorized one, and still names itself.
    """
    if address in ("", "<>"):
        return ""
    try:
        return normalize(address)
    except BadAddress:
        return address.strip().lower()


def header_addresses(msg: Message, name: str) -> tuple[str, ...]:
    values = msg.get_all(name)
    if not values:
        return ()
    return _addresses(tuple(str(v) for v in values))


@lru_cache(maxsize=4096)
def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    # a function of the text alone, and the same senders write the same From line again
    # and again: parsing it (email.utils) costs more than the rest of the DATA reads
    return tuple(normalize_or_raw(addr) for _, addr in getaddresses(values) if addr)


def ids_in(msg: Message, *names: str) -> list[str]:
    """The <message-ids> in the named headers, in order, without repeats."""
    ids = []
    for name in names:
        for value in msg.get_all(name, []):
            ids.extend(part for part in str(value).replace(">", "> ").split()
                       if part.startswith("<") and part.endswith(">"))
    return list(dict.fromkeys(ids))


def message_ids(msg: Message) -> list[str]:
    """The Message-IDs a message answers (In-Reply-To first, then References)."""
    return ids_in(msg, "In-Reply-To", "References")


def _pair_fields(found: Recipient, direction: str) -> dict[str, Any]:
    """The Context fields of the pair a RCPT look-up found."""
    return {"alias": found.alias, "direction": direction, "seller": found.seller,
            "buyer": found.buyer, "seller_senders": found.enabled_senders}


class Facts:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def for_rcpt(self, mail_from: str, rcpt: str, *, peer: str = "",
                 auth_seller: str | None = None, now: datetime | None = None) -> Context:
        envelope = Envelope(normalize_or_raw(mail_from), rcpt.strip().lower(), peer,
                            auth_seller)
        now = now or datetime.now(UTC)
        if is_local_address(envelope.rcpt_to, self.settings.alias_domain):
            local = envelope.rcpt_to.rpartition("@")[0]
            control = verp.parse(self.store.secret, local)
            if control is not None:
                return self._for_control(Context("rcpt", envelope, self.settings, now),
                                         control)
            found = self.store.recipient(local)
            if found is not None:  # the Context made once, with what the look-up found
                direction = SELLER_TO_BUYER if found.alias.role == "buyer" else BUYER_TO_SELLER
                return Context("rcpt", envelope, self.settings, now,
                               **_pair_fields(found, direction))
        return Context("rcpt", envelope, self.settings, now)

    def _for_control(self, ctx: Context, control: verp.ControlAddress) -> Context:
        """A bounce or opt-out address: the pair it stands for, if it is genuine."""
        found = self.control_recipient(control)
        if found is None:
            return replace(ctx, control=replace(control, valid=False))
        direction = BOUNCE if control.kind == "bounce" else CONTROL
        return replace(ctx, control=control, **_pair_fields(found, direction))

    def control_recipient(self, control: verp.ControlAddress) -> Recipient | None:
        """The buyer alias a genuine bounce or opt-out address stands for, as RCPT reads it."""
        if control.valid and control.kind == "bounce":
            record = self.store.find_message(control.value)
            if record is not None and record["pair_id"] is not None:
                alias = self.store.alias_of_pair(record["pair_id"], "buyer")
                return None if alias is None else self.store.recipient(alias.token)
        elif control.valid:
            return self.store.recipient(control.value)
        return None

    def for_data(self, rcpt_ctx: Context, msg: Message) -> tuple[Context, list[dict]]:
        """The DATA-stage context and the thread-map rows the message refers to."""
        data = {"stage": "data", "message": msg,
                "from_addresses": header_addresses(msg, "From"),
                "reply_to_addresses": header_addresses(msg, "Reply-To")}
        alias = rcpt_ctx.alias
        if alias is None or alias.revoked:
            return replace(rcpt_ctx, **data), []
        pair = alias.pair
        answered = message_ids(msg)
        threads = self.store.thread_entries(pair, answered)
        orders, reviewed = self.store.orders_and_reviews(pair)
        ctx = replace(
            rcpt_ctx, **data,
            orders=orders,
            review_requests=reviewed,
            is_reply=any(t["direction"] == BUYER_TO_SELLER and t["relay_msgid"] in
                         answered for t in threads),
        )
        # The counts below need the subject or the headers the Context reads (and caches)
        # first; a new Context would read them again, so they are filled in on this one,
        # which nothing else has seen yet.
        if has_important_tag(ctx.subject):  # strikes count only against [Important] misuse
            window = ctx.now - timedelta(days=self.settings.strike_window_days)
            object.__setattr__(ctx, "recent_strikes",
                               self.store.count_strikes(pair.seller_id, window))
        if ctx.auto_reply:  # only an auto-reply is limited by how many came today
            object.__setattr__(ctx, "recent_auto_replies", self.store.count_auto_replies(
                pair.id, ctx.direction, ctx.now - timedelta(days=1)))
        return ctx, threads
