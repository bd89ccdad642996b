"""DKIM end to end: what the relay forwards verifies; `require` refuses unsigned forgeries."""

from __future__ import annotations

import dkim
from cryptography.hazmat.primitives import serialization

from relay.dkim import Signer, SigningKey, generate_rsa_pem
from tests.conftest import SELLER_ADDR, seed
from tests.test_dkim import dnsfunc, table_for
from tests.test_e2e_relay import seller_message

SELLER_KEY = serialization.load_pem_private_key(generate_rsa_pem(), password=None)
SELLER_SIGNER = Signer("seller.example", [SigningKey("s2026", SELLER_KEY)])
OTHER_SIGNER = Signer("other.example", [SigningKey("s2026", SELLER_KEY)])


def signed(signer: Signer, message: bytes) -> bytes:
    return signer.sign(message) + message


def test_forwarded_message_verifies_against_the_published_record(relay, sink):
    parties = seed(relay.store)
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            seller_message(parties.buyer_alias))
    assert code == 250, text
    [out] = sink.messages
    relay_signer = Signer.from_config(relay.config)
    assert out.data.startswith(b"DKIM-Signature:")
    assert b"d=relay.example" in out.data.split(b"\r\n\r\n")[0]
    assert dkim.verify(out.data, dnsfunc=dnsfunc(table_for(relay_signer)))


def require_relay(relay_factory):
    resolver = table_for(SELLER_SIGNER, OTHER_SIGNER)
    relay = relay_factory(dkim={"verify_inbound": "require"}, resolver=resolver)
    return relay, seed(relay.store)


def test_require_accepts_an_aligned_signature(relay_factory, sink):
    relay, parties = require_relay(relay_factory)
    message = signed(SELLER_SIGNER, seller_message(parties.buyer_alias))
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, message)
    assert code == 250, text
    [record] = relay.store.list_messages()
    assert record["findings"][0]["check"] == "dkim"
    assert record["findings"][0]["result"] == "pass"
    # the seller's signature is checked, recorded, and not forwarded
    assert sink.messages[0].data.count(b"DKIM-Signature:") == 1
    assert b"d=seller.example" not in sink.messages[0].data


def test_require_refuses_forged_foreign_and_tampered(relay_factory, sink):
    relay, parties = require_relay(relay_factory)
    unsigned = seller_message(parties.buyer_alias)
    foreign = signed(OTHER_SIGNER, unsigned)
    tampered = signed(SELLER_SIGNER, unsigned).replace(b"on its way", b"on its way!!")
    for message in (unsigned, foreign, tampered):
        code, text = relay.send(SELLER_ADDR, parties.buyer_alias, message)
        assert code == 550 and "5.7.1" in text and "policy=authorized_sender" in text, text
    assert sink.messages == []


def test_record_mode_checks_but_does_not_enforce(relay_factory, sink):
    relay = relay_factory(dkim={"verify_inbound": "record"}, resolver=table_for(SELLER_SIGNER))
    parties = seed(relay.store)
    code, _ = relay.send(SELLER_ADDR, parties.buyer_alias, seller_message(parties.buyer_alias))
    assert code == 250
    [record] = relay.store.list_messages()
    assert record["findings"][0]["result"] == "none"
