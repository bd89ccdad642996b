"""Facts.for_rcpt and Facts.for_data give the Context they gave before they built it once
(the old code is kept below as the oracle): every field, on every kind of recipient and
message, and the From / Reply-To addresses of any header text, cached or not."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.message import Message
from email.utils import getaddresses

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from relay.facts import Facts, header_addresses, message_ids, normalize_or_raw
from tests.conftest import BUYER_ADDR, ORDER, SELLER_ADDR, seed

NOW = datetime(2025, 1, 20, 9, 5, 17, tzinfo=UTC)


def old_header_addresses(msg: Message, name: str) -> tuple[str, ...]:
    values = [str(v) for v in msg.get_all(name, [])]
    return tuple(normalize_or_raw(addr) for _, addr in getaddresses(values) if addr)


class OldFacts:
    """relay.facts.Facts as it was (commit 9f808ff)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def for_rcpt(self, mail_from, rcpt, *, peer="", auth_seller=None, now=None) -> Context:
        envelope = Envelope(normalize_or_raw(mail_from), rcpt.strip().lower(), peer,
                            auth_seller)
        ctx = Context("rcpt", envelope, self.settings, now or datetime.now(UTC))
        if not is_local_address(envelope.rcpt_to, self.settings.alias_domain):
            return ctx
        local = envelope.rcpt_to.rpartition("@")[0]
        control = verp.parse(self.store.secret, local)
        if control is not None:
            return self._for_control(ctx, control)
        found = self.store.recipient(local)
        if found is None:
            return ctx
        return self._with_pair(ctx, found, SELLER_TO_BUYER if found.alias.role == "buyer"
                               else BUYER_TO_SELLER)

    def _for_control(self, ctx, control):
        found = Facts(self.store, self.settings).control_recipient(control)  # not changed
        if found is None:
            return replace(ctx, control=replace(control, valid=False))
        return replace(self._with_pair(ctx, found, BOUNCE if control.kind == "bounce"
                                       else CONTROL), control=control)

    @staticmethod
    def _with_pair(ctx: Context, found: Recipient, direction: str) -> Context:
        return replace(ctx, alias=found.alias, direction=direction, seller=found.seller,
                       buyer=found.buyer, seller_senders=found.enabled_senders)

    def for_data(self, rcpt_ctx: Context, msg: Message):
        ctx = replace(rcpt_ctx, stage="data", message=msg,
                      from_addresses=old_header_addresses(msg, "From"),
                      reply_to_addresses=old_header_addresses(msg, "Reply-To"))
        alias = ctx.alias
        if alias is None or alias.revoked:
            return ctx, []
        pair = alias.pair
        answered = message_ids(msg)
        threads = self.store.thread_entries(pair, answered)
        orders, reviewed = self.store.orders_and_reviews(pair)
        window = ctx.now - timedelta(days=self.settings.strike_window_days)
        ctx = replace(ctx, orders=orders, review_requests=reviewed,
                      is_reply=any(t["direction"] == BUYER_TO_SELLER and t["relay_msgid"] in
                                   answered for t in threads))
        if has_important_tag(ctx.subject):
            ctx = replace(ctx, recent_strikes=self.store.count_strikes(pair.seller_id, window))
        if ctx.auto_reply:
            ctx = replace(ctx, recent_auto_replies=self.store.count_auto_replies(
                pair.id, ctx.direction, ctx.now - timedelta(days=1)))
        return ctx, threads


def same(new: Context, old: Context) -> None:
    assert type(new) is Context
    for f in fields(Context):
        assert getattr(new, f.name) == getattr(old, f.name), f.name
    for name in ("subject", "text", "auto_reply", "named_orders", "referenced_orders"):
        assert getattr(new, name) == getattr(old, name), name
    if old.alias is not None:  # fields that do not take part in ==
        assert new.alias.pair_tokens == old.alias.pair_tokens
    if old.seller is not None:
        assert new.seller.addresses == old.seller.addresses


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("facts") / "relay.db")
    store.ensure_secret()
    parties = seed(store)
    pair = store.pair("s1", "b1")
    store.record_message({"id": "0123456789abcdef", "ts": NOW.isoformat(), "pair_id": pair.id,
                          "decision": "delivered"})
    store.add_thread("<relay-1@relay.example>", "<orig-1@mail.example>", pair,
                     BUYER_TO_SELLER, "0123456789abcdef")
    store.add_strike("s1", "[Important] misuse", "0123456789abcdef")
    for hours in (2, 30):  # auto-replies today, and one of yesterday
        store.record_message({"id": f"auto{hours}", "pair_id": pair.id, "auto_reply": 1,
                              "ts": (NOW - timedelta(hours=hours)).isoformat(),
                              "direction": SELLER_TO_BUYER, "decision": "delivered"})
    store.add_buyer("b2", "other@mail.example", "Other")
    revoked = store.aliases(store.pair("s1", "b2"))["buyer"]
    store.revoke_alias(revoked)
    secret = store.secret
    recipients = [
        parties.buyer_alias, parties.seller_alias, f"{revoked}@relay.example",
        "nosuchalias0000000@relay.example", "someone@elsewhere.example", "",
        verp.bounce_address(secret, "0123456789abcdef", "relay.example"),
        verp.bounce_address(secret, "0123456789abcdee", "relay.example"),
        verp.bounce_address(secret, "0123456789abcdef", "relay.example", today=1),
        verp.optout_address(secret, parties.buyer_alias.partition("@")[0], "relay.example"),
        verp.optout_address(secret, "nosuchalias0000000", "relay.example", kind="optin"),
        "optout-forged-aaaaaaaaaa@relay.example",
    ]
    yield store, recipients
    store.close()


SENDERS = [SELLER_ADDR, SELLER_ADDR.upper(), BUYER_ADDR, "", "<>", "not an address",
           "x@seller.example"]
HEADERS = [
    "", f"From: {SELLER_ADDR}\n", f'From: "Owen, the shop" <{SELLER_ADDR}>\n',
    f"From: {BUYER_ADDR}\nReply-To: a@x.example, B <b@y.example>\n",
    "From: undisclosed-recipients:;\n", "From: =?utf-8?q?J=C3=B6rg?= <joerg@x.example>\n",
    "In-Reply-To: <relay-1@relay.example>\n", "References: <orig-1@mail.example> <x@y>\n",
    "Auto-Submitted: auto-replied\n", "Precedence: bulk\n", "X-Autoreply: yes\n",
]
SUBJECTS = ["Hello", f"Your order {ORDER}", "[Important] your order", "[important] x",
            "=?utf-8?q?=5BImportant=5D_caf=C3=A9?="]


@given(sender=st.sampled_from(SENDERS), rcpt=st.integers(0, 11),
       headers=st.lists(st.sampled_from(HEADERS), max_size=4),
       subject=st.none() | st.sampled_from(SUBJECTS), auth=st.none() | st.just("s1"))
def test_contexts_are_what_the_old_facts_made(world, sender, rcpt, headers, subject, auth):
    store, recipients = world
    settings = Settings()
    new, old = Facts(store, settings), OldFacts(store, settings)
    to = recipients[rcpt]
    rcpt_new = new.for_rcpt(sender, to, peer="192.0.2.1", auth_seller=auth, now=NOW)
    rcpt_old = old.for_rcpt(sender, to, peer="192.0.2.1", auth_seller=auth, now=NOW)
    same(rcpt_new, rcpt_old)
    text = "".join(headers) + (f"Subject: {subject}\n" if subject is not None else "")
    msg = message_from_string(text + "\nAbout your order.\n")
    data_new, threads_new = new.for_data(rcpt_new, msg)
    data_old, threads_old = old.for_data(rcpt_old, msg)
    same(data_new, data_old)
    assert threads_new == threads_old


def test_for_rcpt_without_a_time_takes_the_current_one(world):
    store, recipients = world
    before = datetime.now(UTC)
    ctx = Facts(store, Settings()).for_rcpt(SELLER_ADDR, recipients[0])
    assert before <= ctx.now <= datetime.now(UTC)


_header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)


@given(st.lists(_header_text, max_size=3), st.lists(_header_text, max_size=2))
def test_header_addresses_are_the_uncached_ones(froms, reply_tos):
    msg = Message()
    for value in froms:
        msg["From"] = value
    for value in reply_tos:
        msg["Reply-To"] = value
    for _ in range(2):  # parsed, then from the cache
        assert header_addresses(msg, "From") == old_header_addresses(msg, "From")
        assert header_addresses(msg, "Reply-To") == old_header_addresses(msg, "Reply-To")
