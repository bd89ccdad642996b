"""The submission port as a mail client uses it: STARTTLS, AUTH, then send."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from relay.passwords import hash_password, verify_password
from relay.tls import ensure_self_signed
from tests.conftest import BUYER_ADDR, SELLER_ADDR, seed
from tests.test_e2e_relay import seller_message

PASSWORD = "correct horse battery"


@pytest.fixture
def sub(relay_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    assert ensure_self_signed(cert, key, "relay.example")
    relay = relay_factory(with_submission=True, submission={
        "tls_cert": str(cert), "tls_key": str(key), "auth_fail_limit": 3},
        dkim={"verify_inbound": "require"})
    relay.parties = seed(relay.store)
    relay.store.set_password_hash("s1", hash_password(PASSWORD))
    return relay


def client(relay, tls: bool = True) -> smtplib.SMTP:
    conn = smtplib.SMTP("127.0.0.1", relay.submission_port, local_hostname="laptop.example",
                        timeout=30)
    conn.ehlo()
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
        conn.starttls(context=context)
        conn.ehlo()
    return conn


def test_password_hashes_verify_and_differ():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$")
    assert verify_password(PASSWORD, first) and not verify_password("wrong", first)
    assert not verify_password(PASSWORD, "garbage")


def test_mail_client_session_with_starttls_and_auth_delivers(sub, sink):
    with client(sub) as conn:
        assert "PLAIN" in conn.esmtp_features["auth"] and "LOGIN" in conn.esmtp_features["auth"]
        assert conn.login("s1", PASSWORD)[0] == 235
        refused = conn.sendmail(SELLER_ADDR, [sub.parties.buyer_alias],
                                seller_message(sub.parties.buyer_alias))
    assert refused == {}
    [out] = sink.messages
    assert out.rcpt_tos == [BUYER_ADDR] and SELLER_ADDR.encode() not in out.data


def test_mx_port_requires_dkim_when_configured(sub, sink):
    # the same message on the MX listener has no DKIM signature: refused under `require`
    code, text = sub.send(SELLER_ADDR, sub.parties.buyer_alias,
                          seller_message(sub.parties.buyer_alias))
    assert code == 550 and "policy=authorized_sender" in text and "DKIM" in text
    assert sink.messages == []


def test_auth_without_tls_is_refused(sub):
    with client(sub, tls=False) as conn:
        assert "auth" not in conn.esmtp_features
        code, _ = conn.docmd("AUTH", "PLAIN AHMxAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==")
        assert code in (530, 538)
        code, _ = conn.mail(SELLER_ADDR)
        assert code == 530


def test_mail_without_auth_is_refused(sub, sink):
    with client(sub) as conn:
        code, _ = conn.mail(SELLER_ADDR)
    assert code == 530
    assert sink.messages == []


def test_wrong_password_gets_535_and_repeated_failures_lock_out(sub):
    import base64

    wrong = "PLAIN " + base64.b64encode(b"\0s1\0wrong password!").decode()
    with client(sub) as conn:
        for _ in range(3):
            code, text = conn.docmd("AUTH", wrong)
            assert (code, text[:5]) == (535, b"5.7.8")
        code, text = conn.docmd("AUTH", "PLAIN AHMxAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==")
        assert (code, text[:5]) == (454, b"4.7.0")  # even the right password waits now
    with client(sub) as conn:  # per address, not per connection
        assert conn.docmd("AUTH", "PLAIN AHMxAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==")[0] == 454


def test_unknown_seller_login_gets_535(sub):
    import base64

    unknown = "PLAIN " + base64.b64encode(f"\0nobody\0{PASSWORD}".encode()).decode()
    with client(sub) as conn:
        assert conn.docmd("AUTH", unknown)[0] == 535


def test_authenticated_seller_cannot_use_another_sellers_alias_or_address(sub, sink):
    store = sub.store
    store.add_seller("s2", "Other Shop")
    store.set_sender("s2", "boss@other.example", "enabled")
    store.add_buyer("b2", "bob@mail.example")
    store.upsert_order("111-1111111-1111111", "s2", "b2")
    other_alias = store.aliases(store.pair("s2", "b2"))["buyer"] + "@relay.example"
    with client(sub) as conn:
        conn.login("s1", PASSWORD)
        conn.mail(SELLER_ADDR)
        code, text = conn.rcpt(other_alias)
        assert code == 550 and b"policy=authorized_sender" in text
        conn.rset()
        conn.mail("boss@other.example")
        code, text = conn.rcpt(sub.parties.buyer_alias)
        assert code == 550 and b"policy=authorized_sender" in text
        conn.rset()
        forged = seller_message(sub.parties.buyer_alias).replace(
            SELLER_ADDR.encode(), b"boss@other.example", 1)
        conn.mail(SELLER_ADDR)
        conn.rcpt(sub.parties.buyer_alias)
        code, text = conn.data(forged)
        assert code == 550 and b"policy=authorized_sender" in text
    assert sink.messages == []
