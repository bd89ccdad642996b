"""Every refusal of the chain through real SMTP: the code, the policy= token, an empty sink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from relay.cli import main
from tests.conftest import BUYER_ADDR, ORDER, SELLER_ADDR, SELLER_INBOX, seed
from tests.test_e2e_relay import parsed, seller_message

CUSTOMIZATION = ("Hi,\r\n\r\nBefore I engrave your chopping board I need to confirm the "
                 "wording. Could you tell me exactly which name and date you would like "
                 "engraved, and whether you prefer script or block letters? I will start "
                 "making it as soon as you reply.\r\n\r\nThanks,\r\nOwen\r\n")
NOT_CRITICAL = "Hi,\r\n\r\nYour refund has been processed and should reach you soon.\r\n"
PROMOTION = ("Hi,\r\n\r\nYour order has shipped. P.S. Use code SAVE20 for 20% off your next "
             "order in our spring sale!\r\n")


def refused(relay, sink, message: bytes, policy: str, *, sender: str = SELLER_ADDR,
            to: str | None = None, code: int = 550) -> str:
    code_got, text = relay.send(sender, to, message)
    assert code_got == code, text
    assert f"policy={policy}" in text, text
    assert sink.messages == []
    return text


@pytest.fixture
def env(relay):
    relay.parties = seed(relay.store, category="custom")
    return relay


def test_unauthorized_envelope_and_from(env, sink):
    to = env.parties.buyer_alias
    refused(env, sink, seller_message(to), "authorized_sender", sender="boss@seller.example",
            to=to)
    env.store.set_sender("s1", "boss@seller.example", "blocked")
    refused(env, sink, seller_message(to), "authorized_sender", sender="boss@seller.example",
            to=to)
    forged = seller_message(to).replace(SELLER_ADDR.encode(), b"boss@seller.example", 1)
    text = refused(env, sink, forged, "authorized_sender", to=to)
    assert "Messaging Permissions" in text


def test_sender_match_is_case_insensitive(env, sink):
    to = env.parties.buyer_alias
    code, text = env.send(SELLER_ADDR.upper(), to, seller_message(to))
    assert code == 250, text


def test_suspended_seller(env, sink):
    env.store.suspend_seller("s1")
    to = env.parties.buyer_alias
    refused(env, sink, seller_message(to), "seller_status", to=to)


def test_missing_or_foreign_order(env, sink):
    to = env.parties.buyer_alias
    refused(env, sink, seller_message(to, subject="Hello"), "order_reference", to=to)
    refused(env, sink, seller_message(to, subject="About 999-9999999-9999999"),
            "order_reference", to=to)


def test_cutoff_after_completion(relay, sink):
    parties = seed(relay.store, order_status="completed",
                   completed_at=datetime.now(UTC) - timedelta(days=31))
    text = refused(relay, sink, seller_message(parties.buyer_alias), "cutoff",
                   to=parties.buyer_alias)
    assert "30 days" in text


def test_cutoff_boundary_day_still_delivers(relay, sink):
    parties = seed(relay.store, order_status="completed",
                   completed_at=datetime.now(UTC) - timedelta(days=30) + timedelta(minutes=5))
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            seller_message(parties.buyer_alias))
    assert code == 250, text


def test_content_refusal_names_category_and_records_rules(env, sink):
    to = env.parties.buyer_alias
    text = refused(env, sink, seller_message(to, body=PROMOTION), "content", to=to)
    assert "promot" in text.lower()
    [record] = env.store.list_messages()
    assert record["policy"] == "content" and record["rule_ids"]


def test_attachment_type(env, sink):
    to = env.parties.buyer_alias
    message = (f"From: {SELLER_ADDR}\r\nTo: {to}\r\nSubject: Order {ORDER} invoice\r\n"
               'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
               "--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
               "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
               'Content-Disposition: attachment; filename="invoice.exe"\r\n\r\nTVqQAAMAAAAE\r\n'
               "--b--\r\n").encode()
    text = refused(env, sink, message, "attachments", to=to)
    assert "pdf" in text


def test_opt_out_refuses_and_important_bypasses_only_critical(env, sink):
    to = env.parties.buyer_alias
    env.store.set_optout("b1", True)
    refused(env, sink, seller_message(to), "optout", to=to)
    assert env.store.strikes("s1") == []
    misuse = seller_message(to, subject=f"[Important] Refund for order {ORDER}",
                            body=NOT_CRITICAL)
    refused(env, sink, misuse, "optout", to=to)
    assert len(env.store.strikes("s1")) == 1
    critical = seller_message(to, subject=f"[important] Engraving for order {ORDER}",
                              body=CUSTOMIZATION)
    code, text = env.send(SELLER_ADDR, to, critical)
    assert code == 250, text
    assert len(sink.messages) == 1


def test_critical_topic_outside_its_window_does_not_bypass(relay, sink):
    parties = seed(relay.store, order_status="shipped", category="custom")
    relay.store.set_optout("b1", True)
    critical = seller_message(parties.buyer_alias, body=CUSTOMIZATION,
                              subject=f"[Important] Engraving for order {ORDER}")
    text = refused(relay, sink, critical, "optout", to=parties.buyer_alias)
    assert "not critical now" in text and "shipped" in text


def test_strikes_suspend_then_reinstate(relay_factory, sink):
    relay = relay_factory(policy={"strikes_to_suspend": 2})
    parties = seed(relay.store)
    to = parties.buyer_alias
    misuse = seller_message(to, subject=f"[Important] Refund for order {ORDER}",
                            body=NOT_CRITICAL)
    assert relay.send(SELLER_ADDR, to, misuse)[0] == 250  # delivered, but a strike
    assert len(relay.store.strikes("s1")) == 1
    code, text = relay.send(SELLER_ADDR, to, misuse)
    assert code == 550 and "suspended" in text and "policy=optout" in text
    assert relay.store.seller("s1").suspended
    code, text = relay.send(SELLER_ADDR, to, seller_message(to))
    assert code == 550 and "policy=seller_status" in text
    relay.store.reinstate_seller("s1")
    code, text = relay.send(SELLER_ADDR, to, seller_message(to))
    assert code == 250, text
    assert len(sink.messages) == 2


def test_marketplace_fulfilment_routes_service_requests(relay_factory, sink):
    relay = relay_factory(policy={"customer_service": "help@marketplace.example"})
    parties = seed(relay.store)
    relay.store.update_seller("s1", fulfilment="marketplace")
    ask = (f"From: {BUYER_ADDR}\r\nTo: {parties.seller_alias}\r\nSubject: Where is my "
           f"order {ORDER}?\r\n\r\nIt still hasn't arrived.\r\n").encode()
    assert relay.send(BUYER_ADDR, parties.seller_alias, ask)[0] == 250
    routed, note = sink.messages
    assert routed.rcpt_tos == ["help@marketplace.example"]
    assert parsed(routed.data)["From"].addresses[0].addr_spec == parties.buyer_alias
    assert note.rcpt_tos == [BUYER_ADDR] and b"customer service" in note.data
    question = ask.replace(b"Where is my order", b"Is the oak board oiled? Order").replace(
        b"It still hasn't arrived.", b"Thanks!")
    assert relay.send(BUYER_ADDR, parties.seller_alias, question)[0] == 250
    assert sink.messages[2].rcpt_tos == [SELLER_INBOX]


def test_policy_check_and_messages_show(env, sink, tmp_path):
    to = env.parties.buyer_alias
    eml = tmp_path / "promo.eml"
    eml.write_bytes(seller_message(to, body=PROMOTION))
    runner = CliRunner()
    config = str(tmp_path / "relay.toml")
    result = runner.invoke(main, ["policy", "check", str(eml), "--from", SELLER_ADDR,
                                  "--to", to, "--config", config, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["decision"] == "reject" and report["policy"] == "content"
    assert {f["policy"] for f in report["findings"]} >= {"authorized_sender", "content"}
    assert sink.messages == [] and env.store.list_messages() == []  # a dry run

    env.send(SELLER_ADDR, to, seller_message(to, body=PROMOTION))
    [record] = env.store.list_messages()
    shown = runner.invoke(main, ["messages", "show", record["id"], "--config", config,
                                 "--json"])
    assert shown.exit_code == 0, shown.output
    details = json.loads(shown.stdout)
    assert details["policy"] == "content"
    assert any(f.get("rule_ids") for f in details["findings"])


def test_seller_signing_with_their_own_address_is_not_off_platform(env, sink):
    to = env.parties.buyer_alias
    signed = seller_message(to, body=f"Parcel is on its way.\r\nOwen ({SELLER_ADDR})\r\n")
    code, text = env.send(SELLER_ADDR, to, signed)
    assert code == 250, text
    assert SELLER_ADDR.encode() not in sink.messages[0].data
    other = seller_message(to, body="Parcel is on its way. Write to owen@elsewhere.example\r\n")
    code, text = env.send(SELLER_ADDR, to, other)
    assert code == 550 and "policy=content" in text
