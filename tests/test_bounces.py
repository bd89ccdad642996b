"""Bounces, auto-replies, loops, one-step opt-out and threading, over real SMTP."""

from __future__ import annotations

import re

from relay import verp
from relay.parsing import parse
from tests.conftest import BUYER_ADDR, ORDER, SELLER_ADDR, SELLER_INBOX, seed
from tests.test_e2e_relay import parsed, seller_message


def dsn(verp_to: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    """A real RFC 3464 report, as a receiving MTA would write it, full of the buyer's data."""
    return (
        "From: Mail Delivery Subsystem <mailer-daemon@mx.mail.example>\r\n"
        f"To: {verp_to}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        f"--R\r\nContent-Type: text/plain\r\n\r\nI'm sorry, <{BUYER_ADDR}> does not exist "
        "at mx.mail.example (Jane Buyer's old mailbox).\r\n"
        "--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.mail.example\r\n\r\n"
        f"Final-Recipient: rfc822; {BUYER_ADDR}\r\nOriginal-Recipient: rfc822; {BUYER_ADDR}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{BUYER_ADDR}>: Recipient address rejected\r\n"
        "\r\n--R\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"To: Jane Buyer <{BUYER_ADDR}>\r\nSubject: Your order\r\n\r\n--R--\r\n").encode()


def send_to_buyer(relay, parties, **kwargs) -> bytes:
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            seller_message(parties.buyer_alias, **kwargs))
    assert code == 250, text
    return text


def test_every_forwarded_message_has_a_signed_verp_sender(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    [out] = sink.messages
    local = out.mail_from.split("@")[0]
    control = verp.parse(relay.store.secret, local)
    assert control.kind == "bounce" and control.valid
    assert relay.store.find_message(control.value)["decision"] == "delivered"


def test_bounce_becomes_a_clean_notice_for_the_seller(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    bounce_to = sink.messages[0].mail_from
    code, text = relay.send("", bounce_to, dsn(bounce_to))
    assert code == 250, text
    notice = sink.messages[1]
    assert notice.rcpt_tos == [SELLER_INBOX] and notice.mail_from == "<>"  # null sender
    wire = notice.data.decode().lower()
    for secret in (BUYER_ADDR, "mail.example", "jane buyer", "final-recipient", "diagnostic"):
        assert secret not in wire, secret
    body = parsed(notice.data).get_body().get_content()
    assert parties.buyer_alias in body and ORDER in body and "permanently" in body
    record_id = verp.parse(relay.store.secret, bounce_to.split("@")[0]).value
    assert relay.store.find_message(record_id)["bounce"] == "hard"


def test_soft_bounce_is_recorded_as_soft(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    bounce_to = sink.messages[0].mail_from
    code, _ = relay.send("", bounce_to, dsn(bounce_to, status="4.2.2", action="delayed"))
    assert code == 250
    record_id = verp.parse(relay.store.secret, bounce_to.split("@")[0]).value
    assert relay.store.find_message(record_id)["bounce"] == "soft"
    assert "delayed" in parsed(sink.messages[1].data).get_body().get_content()


def test_forged_and_expired_verp_addresses_are_refused(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    real = sink.messages[0].mail_from
    forged = re.sub(r"-[a-z0-9]+@", "-aaaaaaaaaa@", real)
    expired = verp.bounce_address(relay.store.secret, "0123456789abcdef", "relay.example",
                                  today=1000)
    for address in (forged, expired, "bounce-nothing@relay.example"):
        code, text = relay.send("", address, dsn(address))
        assert (code, text[:5]) == (550, "5.1.1"), address
    assert len(sink.messages) == 1


def test_repeated_hard_bounces_flag_the_buyer(relay, sink):
    parties = seed(relay.store)
    for _ in range(3):
        send_to_buyer(relay, parties)
        bounce_to = sink.messages[-1].mail_from
        assert relay.send("", bounce_to, dsn(bounce_to))[0] == 250
    assert relay.store.buyer("b1").bouncing
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            seller_message(parties.buyer_alias))
    assert code == 550 and "policy=deliverable" in text


def out_of_office(to: str) -> bytes:
    return (f"From: Jane <{BUYER_ADDR}>\r\nTo: {to}\r\nSubject: Out of office\r\n"
            "Auto-Submitted: auto-replied\r\nMessage-ID: <ooo@mail.example>\r\n\r\n"
            "I am away until Monday.\r\n").encode()


def test_out_of_office_reaches_the_seller_once_a_day(relay, sink):
    parties = seed(relay.store)
    assert relay.send("", parties.seller_alias, out_of_office(parties.seller_alias))[0] == 250
    forwarded = sink.messages[0]
    assert forwarded.rcpt_tos == [SELLER_INBOX]
    assert parsed(forwarded.data)["Auto-Submitted"] == "auto-replied"
    code, text = relay.send(BUYER_ADDR, parties.seller_alias,
                            out_of_office(parties.seller_alias))
    assert code == 550 and "policy=auto_reply" in text
    assert len(sink.messages) == 1
    # a plain message from the null sender is not an auto-reply and does not pass
    plain = out_of_office(parties.seller_alias).replace(b"Auto-Submitted: auto-replied\r\n", b"")
    assert relay.send("", parties.seller_alias, plain)[0] == 550


def test_an_auto_reply_to_a_verp_address_is_never_answered(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    bounce_to = sink.messages[0].mail_from
    code, _ = relay.send(BUYER_ADDR, bounce_to, out_of_office(bounce_to))
    assert code == 250
    assert len(sink.messages) == 1  # discarded: no notice, nothing forwarded


def test_a_loop_between_aliases_stops(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    # the buyer's mailbox forwards everything, as is, to the seller alias
    looped = sink.messages[0].data
    code, text = relay.send(BUYER_ADDR, parties.seller_alias, looped)
    assert (code, "policy=loop" in text) == (554, True), text
    assert len(sink.messages) == 1


def test_one_step_opt_out_and_back_in(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties)
    header = parsed(sink.messages[0].data)["List-Unsubscribe"]
    optout = re.fullmatch(r"<mailto:([^?]+)\?subject=unsubscribe>", header).group(1)
    request = f"From: {BUYER_ADDR}\r\nTo: {optout}\r\nSubject: unsubscribe\r\n\r\n\r\n".encode()

    # someone else cannot opt the buyer out
    assert relay.send("mallory@mail.example", optout, request)[0] == 550
    assert not relay.store.buyer("b1").opted_out

    assert relay.send(BUYER_ADDR, optout, request)[0] == 250
    assert relay.store.buyer("b1").opted_out
    confirmation = sink.messages[1]
    assert confirmation.rcpt_tos == [BUYER_ADDR] and confirmation.mail_from == "<>"
    optin = re.search(r"optin-[a-z0-9-]+@relay\.example",
                      parsed(confirmation.data).get_body().get_content()).group(0)

    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            seller_message(parties.buyer_alias))
    assert code == 550 and "policy=optout" in text

    assert relay.send(BUYER_ADDR, optin, request)[0] == 250
    assert not relay.store.buyer("b1").opted_out
    send_to_buyer(relay, parties)


def test_threading_with_references_only_and_old_messages(relay, sink):
    parties = seed(relay.store)
    send_to_buyer(relay, parties, msgid="<first@seller.example>")
    first = parsed(sink.messages[0].data)["Message-ID"]
    send_to_buyer(relay, parties, msgid="<second@seller.example>")
    second = parsed(sink.messages[1].data)["Message-ID"]
    # a client that sends only References, answering the older message
    reply = (f"From: {BUYER_ADDR}\r\nTo: {parties.seller_alias}\r\nSubject: Re: old\r\n"
             f"Message-ID: <r@mail.example>\r\nReferences: {second} <unknown@x.example>"
             f" {first}\r\n\r\nAbout the first one.\r\n").encode()
    assert relay.send(BUYER_ADDR, parties.seller_alias, reply)[0] == 250
    back = parse(sink.messages[2].data)
    assert back["In-Reply-To"] == "<first@seller.example>"
    assert back["References"].split() == ["<second@seller.example>", "<first@seller.example>"]
