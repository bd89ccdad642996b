"""Table-driven tests of each policy: pure functions of a context, no database, no SMTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy

import pytest

from aliasdb.models import Alias, Buyer, Order, Pair, Seller
from policies import (
    attachments,
    authorized_sender,
    buyer_messages,
    buyer_sender,
    chain,
    cutoff,
    known_alias,
    order_reference,
    relay_control,
    seller_status,
)
from policies.context import BUYER_TO_SELLER, SELLER_TO_BUYER, Context, Envelope, Settings
from policies.reasons import ContactReasons
from policies.verdict import Action, reject

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PAIR = Pair(1, "s1", "b1")
SELLER = Seller("s1", "Shop", "inbox@seller.example", True, "seller", None)
BUYER = Buyer("b1", "jane@mail.example", "Jane", False)
ORDER_ID = "302-4418760-1193825"


def order(status="pending", completed_days_ago=None, category=None, oid=ORDER_ID) -> Order:
    done = NOW - timedelta(days=completed_days_ago) if completed_days_ago is not None else None
    return Order(oid, "s1", "b1", category, status, done)


def msg(subject="Hello", body="Hi", headers="", ctype="text/plain") -> object:
    raw = f"From: shop@seller.example\r\nSubject: {subject}\r\n{headers}" \
          f"Content-Type: {ctype}\r\n\r\n{body}\r\n"
    return message_from_bytes(raw.encode(), policy=email_policy.compat32)


def ctx(stage="data", *, direction=SELLER_TO_BUYER, mail_from="shop@seller.example",
        rcpt="abc@relay.example", alias_role="buyer", revoked=False, seller=SELLER,
        buyer=BUYER, senders=frozenset({"shop@seller.example"}), orders=None,
        message=None, from_addresses=("shop@seller.example",), is_reply=False,
        settings=None, alias=True) -> Context:
    return Context(
        stage=stage, envelope=Envelope(mail_from, rcpt), settings=settings or Settings(),
        now=NOW, alias=Alias("abc", PAIR, alias_role, revoked) if alias else None,
        direction=direction, seller=seller, buyer=buyer, seller_senders=senders,
        orders=orders if orders is not None else (order(),),
        message=message if message is not None else msg(
            subject=f"Order {ORDER_ID}"), from_addresses=from_addresses, is_reply=is_reply)


def outcome(check, context) -> str | None:
    verdict = check(context)
    return None if verdict is None else verdict.action.value


@pytest.mark.parametrize(("rcpt", "expected"), [
    ("abc@relay.example", None),
    ("ABC@Relay.Example", None),
    ("abc@elsewhere.example", "reject"),
    ("a%b@relay.example", "reject"),
    ("a!b@relay.example", "reject"),
    ('"a@b"@relay.example', "reject"),
    ("a.b@relay.example", "reject"),
    ("abc@relay.example.evil.example", "reject"),
    ("abc@[127.0.0.1]", "reject"),
    ("relay.example", "reject"),
    ("", "reject"),
])
def test_relay_control(rcpt, expected):
    assert outcome(relay_control.check, ctx("rcpt", rcpt=rcpt)) == expected


@pytest.mark.parametrize(("alias", "revoked", "status"), [
    (True, False, None), (False, False, "5.1.1"), (True, True, "5.1.1")])
def test_known_alias(alias, revoked, status):
    verdict = known_alias.check(ctx("rcpt", alias=alias, revoked=revoked))
    assert (verdict.status if verdict else None) == status


def test_seller_status():
    suspended = Seller("s1", "Shop", None, True, "seller", NOW)
    assert outcome(seller_status.check, ctx(seller=SELLER)) is None
    verdict = seller_status.check(ctx(seller=suspended))
    assert verdict.action is Action.REJECT and "suspended since 2026-06-01" in verdict.reason


@pytest.mark.parametrize(("stage", "mail_from", "from_addresses", "expected"), [
    ("rcpt", "shop@seller.example", (), None),
    ("rcpt", "other@seller.example", (), "reject"),
    ("rcpt", "", (), None),  # the null sender may be an out-of-office: DATA decides
    ("data", "shop@seller.example", ("shop@seller.example",), None),
    ("data", "shop@seller.example", ("boss@seller.example",), "reject"),
    ("data", "shop@seller.example", ("shop@seller.example", "shop@seller.example"), "reject"),
    ("data", "shop@seller.example", (), "reject"),
])
def test_authorized_sender(stage, mail_from, from_addresses, expected):
    context = ctx(stage, mail_from=mail_from, from_addresses=from_addresses)
    assert outcome(authorized_sender.check, context) == expected


@pytest.mark.parametrize(("headers", "expected"), [
    ("", "reject"),
    ("Auto-Submitted: auto-replied\r\n", None),
    ("Auto-Submitted: no\r\n", "reject"),
    ("Precedence: auto_reply\r\n", None),
    ("X-Autoreply: yes\r\n", None),
    ("X-Auto-Response-Suppress: All\r\n", "reject"),  # Outlook puts it on ordinary mail
])
def test_null_sender_only_for_auto_replies(headers, expected):
    context = ctx(mail_from="", message=msg(f"Order {ORDER_ID}", headers=headers))
    assert outcome(authorized_sender.check, context) == expected
    buyer_ctx = ctx(mail_from="", direction=BUYER_TO_SELLER, from_addresses=(BUYER.address,),
                    message=msg("Re: hi", headers=headers))
    assert outcome(buyer_sender.check, buyer_ctx) == expected


def test_loop_and_auto_reply_limits():
    from policies import auto_reply, loop

    marked = msg(headers="X-Relay-Loop: relay.example\r\n")
    assert loop.check(ctx(message=marked)).status == "5.4.6"
    hops = msg(headers="Received: from x by y\r\n" * 31)
    assert loop.check(ctx(message=hops)).code == 554
    assert loop.check(ctx(message=msg(headers="Received: from x by y\r\n" * 30))) is None
    auto = msg(headers="Auto-Submitted: auto-replied\r\n")
    assert auto_reply.check(ctx(message=auto)) is None
    from dataclasses import replace

    assert auto_reply.check(replace(ctx(message=auto), recent_auto_replies=1)) is not None
    assert auto_reply.check(replace(ctx(), recent_auto_replies=1)) is None


@pytest.mark.parametrize(("mail_from", "from_addresses", "expected"), [
    ("jane@mail.example", ("jane@mail.example",), None),
    ("mallory@mail.example", ("jane@mail.example",), "reject"),
    ("jane@mail.example", ("mallory@mail.example",), "reject"),
])
def test_buyer_sender(mail_from, from_addresses, expected):
    context = ctx(direction=BUYER_TO_SELLER, mail_from=mail_from,
                  from_addresses=from_addresses)
    assert outcome(buyer_sender.check, context) == expected


@pytest.mark.parametrize(("on", "inbox", "expected"), [
    (True, "inbox@seller.example", None), (False, "inbox@seller.example", "reject"),
    (True, None, "reject")])
def test_buyer_messages(on, inbox, expected):
    seller = Seller("s1", "Shop", inbox, on, "seller", None)
    assert outcome(buyer_messages.check, ctx("rcpt", seller=seller)) == expected


@pytest.mark.parametrize(("subject", "body", "is_reply", "expected"), [
    (f"Order {ORDER_ID} shipped", "Hi", False, None),
    ("Shipped", f"Your order {ORDER_ID} is on its way", False, None),
    ("Shipped", "Your order is on its way", False, "reject"),
    ("Shipped", "Your order is on its way", True, None),  # answers the buyer
    ("Order 111-1111111-1111111", "someone else's order", False, "reject"),
])
def test_order_reference(subject, body, is_reply, expected):
    context = ctx(message=msg(subject, body), is_reply=is_reply)
    assert outcome(order_reference.check, context) == expected


def test_order_reference_does_not_say_whose_order():
    other = order_reference.check(ctx(message=msg("Order 111-1111111-1111111")))
    missing = order_reference.check(ctx(message=msg("No order")))
    assert other.reason == missing.reason


@pytest.mark.parametrize(("status", "days_ago", "expected"), [
    ("pending", None, None),
    ("shipped", None, None),
    ("completed", 29, None),
    ("completed", 30, None),  # the boundary day is still inside
    ("completed", 30.01, "reject"),
    ("completed", 31, "reject"),
])
def test_cutoff(status, days_ago, expected):
    context = ctx(orders=(order(status, days_ago),))
    assert outcome(cutoff.check, context) == expected


def test_cutoff_reason_names_date_and_limit():
    verdict = cutoff.check(ctx(orders=(order("completed", 45),)))
    assert "completed on 2026-04-17" in verdict.reason and "30 days" in verdict.reason


def test_cutoff_open_order_wins():
    other = order("pending", oid="111-1111111-1111111")
    context = ctx(orders=(order("completed", 60), other),
                  message=msg(f"Orders {ORDER_ID} and 111-1111111-1111111"))
    assert cutoff.check(context) is None


def multipart(filename: str, ctype: str, payload: bytes = b"data") -> object:
    import base64

    raw = ("From: shop@seller.example\r\nSubject: Order\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
           f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n"
           f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'
           f"{base64.b64encode(payload).decode()}\r\n--b--\r\n")
    return message_from_bytes(raw.encode(), policy=email_policy.compat32)


@pytest.mark.parametrize(("filename", "ctype", "expected"), [
    ("invoice.pdf", "application/pdf", None),
    ("photo.JPG", "image/jpeg", None),
    ("scan.tiff", "image/tiff", None),
    ("notes.txt", "text/plain", None),
    ("letter.docx", "application/octet-stream", None),
    ("setup.exe", "application/octet-stream", "reject"),
    ("invoice.pdf", "application/x-msdownload", "reject"),
    ("archive.zip", "application/zip", "reject"),
    ("page.html", "text/html", "reject"),
])
def test_attachment_types(filename, ctype, expected):
    assert outcome(attachments.check, ctx(message=multipart(filename, ctype))) == expected


def test_attachment_total_size():
    settings = Settings(max_attachment_bytes=100)
    verdict = attachments.check(ctx(message=multipart("a.pdf", "application/pdf", b"x" * 101),
                                    settings=settings))
    assert (verdict.code, verdict.status) == (552, "5.3.4")
    assert attachments.check(ctx(message=multipart("a.pdf", "application/pdf", b"x" * 100),
                                 settings=settings)) is None


REASONS = ContactReasons.from_dict({
    "customizable_categories": ["jewellery"],
    "topics": {
        "customization": {"statuses": ["pending"], "customizable_only": True},
        "delivery_scheduling": {"statuses": ["pending", "shipped"]},
        "shipping_address": {"statuses": ["pending", "shipped"]},
    },
})


@pytest.mark.parametrize(("topic", "status", "category", "allowed"), [
    ("customization", "pending", "jewellery", True),
    ("customization", "pending", "garden", False),
    ("customization", "shipped", "jewellery", False),
    ("customization", "pending", None, True),
    ("delivery_scheduling", "shipped", None, True),
    ("delivery_scheduling", "completed", None, False),
    ("shipping_address", "completed", None, False),
])
def test_contact_reasons(topic, status, category, allowed):
    why = REASONS.why_not(topic, [order(status, category=category)])
    assert (why is None) == allowed


def test_chain_first_refusal_decides_and_every_finding_is_kept():
    calls = []

    def passing(c):
        calls.append("a")

    def refusing(c):
        calls.append("b")
        return reject("no")

    def never(c):
        calls.append("c")

    policies = chain.build(["a", "b", "c"], {
        "a": chain.Policy("a", ("data",), passing),
        "b": chain.Policy("b", ("data",), refusing),
        "c": chain.Policy("c", ("data",), never),
    })
    decision = chain.run(policies, ctx())
    assert calls == ["a", "b"]
    assert decision.decisive.policy == "b"
    assert [f.policy for f in decision.findings] == ["a", "b"]
    assert decision.smtp_reply() == "550 5.7.1 no (policy=b)"
    with pytest.raises(ValueError, match="unknown policy"):
        chain.build(["zzz"], {})
