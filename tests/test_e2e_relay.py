"""End to end over real SMTP on loopback: client -> relay -> sink (the next hop)."""

from __future__ import annotations

import email
import json
from email import policy as email_policy

import pytest

from tests.conftest import BUYER_ADDR, ORDER, SELLER_ADDR, SELLER_INBOX, seed


def seller_message(to: str, *, subject: str = f"Your order {ORDER} has shipped",
                   body: str = "Hi,\r\n\r\nYour parcel is on its way.\r\n\r\nOwen\r\n",
                   msgid: str = "<s-1@seller.example>", extra: str = "") -> bytes:
    return (f"From: \"Owen at the shop\" <{SELLER_ADDR}>\r\n"
            f"To: {to}\r\nSubject: {subject}\r\nMessage-ID: {msgid}\r\n"
            "Date: Mon, 20 Jan 2025 09:05:17 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}").encode()


def parsed(data: bytes):
    return email.message_from_bytes(data, policy=email_policy.default)


def delivered_records(store) -> list[dict]:
    return [m for m in store.list_messages() if m["decision"] == "delivered"]


def test_seller_message_reaches_buyer_rewritten_and_reply_threads_back(relay, sink):
    parties = seed(relay.store)
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            seller_message(parties.buyer_alias))
    assert code == 250, text

    [out] = sink.messages
    assert out.rcpt_tos == [BUYER_ADDR]
    assert out.mail_from.endswith("@relay.example")
    msg = parsed(out.data)
    assert msg["From"].addresses[0].addr_spec == parties.seller_alias
    assert msg["From"].addresses[0].display_name == "Hollow Oak Woodcraft"  # from the DB
    assert msg["Reply-To"].addresses[0].addr_spec == parties.seller_alias
    assert msg["To"].addresses[0].addr_spec == BUYER_ADDR
    relay_msgid = msg["Message-ID"]
    assert relay_msgid.endswith("@relay.example>")
    assert SELLER_ADDR not in out.data.decode() and "seller.example" not in out.data.decode()

    reply = (f"From: Jane <{BUYER_ADDR}>\r\nTo: {parties.seller_alias}\r\n"
             f"Subject: Re: Your order {ORDER} has shipped\r\n"
             f"Message-ID: <b-1@mail.example>\r\nIn-Reply-To: {relay_msgid}\r\n"
             f"References: {relay_msgid}\r\n\r\nThanks! {BUYER_ADDR}\r\n").encode()
    code, text = relay.send(BUYER_ADDR, parties.seller_alias, reply)
    assert code == 250, text
    back = parsed(sink.messages[1].data)
    assert sink.messages[1].rcpt_tos == [SELLER_INBOX]
    assert back["From"].addresses[0].addr_spec == parties.buyer_alias
    assert back["In-Reply-To"] == "<s-1@seller.example>"  # the seller's own message
    assert "<s-1@seller.example>" in back["References"]
    assert BUYER_ADDR not in sink.messages[1].data.decode()

    # the seller answers the buyer's reply: threads onto the buyer's original id,
    # and needs no order number because it answers the buyer
    answer = seller_message(parties.buyer_alias, subject="Re: thanks", msgid="<s-2@seller.example>",
                            extra=f"In-Reply-To: {back['Message-ID']}\r\n")
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, answer)
    assert code == 250, text
    assert parsed(sink.messages[2].data)["In-Reply-To"] == "<b-1@mail.example>"


LEAKY_HTML = (f'<p>Write to <a href="mailto:{SELLER_ADDR.upper()}">{SELLER_ADDR}</a> or '
              f"{SELLER_ADDR.replace('@', '&#64;')}</p><p>Buyer: {BUYER_ADDR}</p>")


def test_no_real_address_survives_delivery(relay_factory, sink):
    import base64
    import quopri

    # the content policy is not what is tested here: run the chain without it
    relay = relay_factory(policy={"order": [
        "relay_control", "known_alias", "seller_status", "authorized_sender",
        "order_reference", "attachments"]})
    parties = seed(relay.store)
    b64 = base64.encodebytes(f"base64 part {SELLER_ADDR} {BUYER_ADDR}".encode()).decode()
    qp = quopri.encodestring(f"qp part = {SELLER_ADDR} and {SELLER_INBOX} =".encode()).decode()
    b64, qp = (text.replace("\n", "\r\n") for text in (b64, qp))  # on the wire: CRLF only
    body = (
        f"From: Owen <{SELLER_ADDR}>\r\nTo: {parties.buyer_alias}\r\n"
        f"Cc: {SELLER_INBOX}\r\nReply-To: {SELLER_ADDR}\r\nSender: {SELLER_ADDR}\r\n"
        f"Subject: Order {ORDER} - contact {SELLER_ADDR}\r\n"
        f"Received: from mail.seller.example by mx ({SELLER_ADDR})\r\n"
        f"X-Originating-IP: [192.0.2.7]\r\nDisposition-Notification-To: {SELLER_ADDR}\r\n"
        f"Return-Receipt-To: {SELLER_ADDR}\r\nAutocrypt: addr={SELLER_ADDR}; keydata=AAAA\r\n"
        "Message-ID: <leak@seller.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        '--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        f"--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Order {ORDER}. Mail me at {SELLER_ADDR} or {SELLER_ADDR.upper()}.\r\n"
        f"On Mon, Jane <{BUYER_ADDR}> wrote:\r\n> from {BUYER_ADDR}\r\n\r\n"
        f"--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{LEAKY_HTML}\r\n--b2--\r\n"
        f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"
        f"\r\n\r\n{b64}\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{qp}\r\n"
        '--b1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n'
        f"From: {BUYER_ADDR}\r\nTo: {SELLER_ADDR}\r\nSubject: my question\r\n\r\n"
        f"question from {BUYER_ADDR}\r\n--b1--\r\n")
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, body.encode())
    assert code == 250, text
    [out] = sink.messages
    wire = out.data.decode("utf-8", "replace").lower()
    # the buyer's own address is the envelope recipient and the To header, nowhere else
    assert wire.count(BUYER_ADDR) == 1
    for secret in (SELLER_ADDR, SELLER_INBOX, "192.0.2.7", "seller.example"):
        assert secret not in wire, secret
    for part in parsed(out.data).walk():
        if not part.is_multipart() and part.get_content_maintype() == "text":
            decoded = part.get_content().lower()
            assert SELLER_ADDR not in decoded and SELLER_INBOX not in decoded
    assert parties.seller_alias in wire


@pytest.mark.parametrize("rcpt", [
    "someone@elsewhere.example",
    "victim%elsewhere.example@relay.example",
    "victim!elsewhere.example@relay.example",
    "@relay.example:victim@elsewhere.example",
    '"victim@elsewhere.example"@relay.example',
    "postmaster@[127.0.0.1]",
])
def test_relay_attempts_are_refused(relay, sink, rcpt):
    seed(relay.store)
    with relay.client() as client:
        client.mail(SELLER_ADDR)
        code, text = client.rcpt(rcpt)
    assert code in (550, 553, 501), text
    if code == 550:
        assert text.startswith(b"5.7.1") and b"policy=relay_control" in text
    assert sink.messages == []


def test_unknown_and_revoked_aliases_get_511(relay, sink):
    parties = seed(relay.store)
    code, text = relay.send(SELLER_ADDR, "aaaaaaaaaaaaaaaaaaaa@relay.example",
                            seller_message("x@relay.example"))
    assert (code, text[:5]) == (550, "5.1.1")
    relay.store.revoke_alias(parties.buyer_alias.split("@")[0])
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert (code, text[:5]) == (550, "5.1.1") and "revoked" in text
    assert sink.messages == []


def test_second_recipient_waits_for_its_own_transaction(relay, sink):
    parties = seed(relay.store)
    with relay.client() as client:
        client.mail(SELLER_ADDR)
        assert client.rcpt(parties.buyer_alias)[0] == 250
        code, text = client.rcpt(parties.buyer_alias)
    assert (code, text[:5]) == (452, b"4.5.3")


def test_next_hop_tempfail_and_down_give_451_and_no_delivered_record(relay, sink):
    parties = seed(relay.store)
    sink.handler.reply = lambda data: "451 4.3.0 try later"
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert code == 451, text
    sink.handler.reply = lambda data: "554 5.7.1 no thanks <jane.buyer@mail.example>"
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert (code, BUYER_ADDR in text) == (550, False), text  # passed back in class, scrubbed
    sink.close()
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert code == 451, text
    assert sink.messages == []
    assert delivered_records(relay.store) == []
    assert {m["decision"] for m in relay.store.list_messages()} == {"tempfail", "rejected"}


def test_oversize_message_gets_552(relay_factory, sink):
    relay = relay_factory(server={"max_message_bytes": 2000})
    parties = seed(relay.store)
    code, _ = relay.send(SELLER_ADDR, parties.buyer_alias,
                         seller_message(parties.buyer_alias, body=("x" * 70 + "\r\n") * 80))
    assert code == 552
    assert sink.messages == []


def test_buyer_reply_refused_when_seller_takes_no_buyer_messages(relay, sink):
    parties = seed(relay.store, buyer_messages=False)
    msg = f"From: {BUYER_ADDR}\r\nTo: {parties.seller_alias}\r\nSubject: hi\r\n\r\nhello\r\n"
    code, text = relay.send(BUYER_ADDR, parties.seller_alias, msg.encode())
    assert code == 550 and "policy=buyer_messages" in text
    code, text = relay.send("other@mail.example", parties.seller_alias, msg.encode())
    assert code == 550 and "policy=buyer_sender" in text
    assert sink.messages == []


def test_internal_error_answers_451_not_500(relay, sink, monkeypatch):
    parties = seed(relay.store)

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(relay.server.pipeline.facts, "for_data", boom)
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert code == 451 and "internals" not in text
    assert sink.messages == []


def test_maildir_delivery(relay_factory, tmp_path):
    relay = relay_factory(delivery={"mode": "maildir"})
    parties = seed(relay.store)
    code, _ = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert code == 250
    [path] = list((tmp_path / "maildir" / BUYER_ADDR / "new").iterdir())
    assert parsed(path.read_bytes())["From"].addresses[0].addr_spec == parties.seller_alias
    assert list((tmp_path / "maildir" / BUYER_ADDR / "tmp").iterdir()) == []


def test_message_decided_log_line_has_ids_not_addresses(relay, sink, logs):
    parties = seed(relay.store)
    relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    lines = logs()
    [decided] = [line for line in lines if line["event"] == "message.decided"]
    for key in ("ts", "level", "session", "msg", "direction", "seller", "pair", "decision",
                "policy", "reason", "smtp_code", "size", "duration_ms"):
        assert key in decided, key
    assert decided["decision"] == "delivered" and decided["seller"] == "s1"
    text = json.dumps(lines)
    assert SELLER_ADDR not in text and BUYER_ADDR not in text


def test_wire_refusal_is_recorded_like_any_decision(relay, sink):
    parties = seed(relay.store)
    bare_lf = seller_message(parties.buyer_alias).replace(b"on its way.\r\n", b"on\nits way.\r\n")
    with relay.client() as client:
        client.mail(SELLER_ADDR)
        client.rcpt(parties.buyer_alias)
        # smtplib would turn the bare LF into CRLF: send DATA by hand
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(bare_lf + b"\r\n.\r\n")
        code, text = client.getreply()
    assert (code, text[:5]) == (550, b"5.6.0")
    [record] = relay.store.list_messages()
    assert (record["policy"], record["decision"], record["smtp_code"]) == (
        "smtp_wire", "rejected", 550)
    assert sink.messages == []
