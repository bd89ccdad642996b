"""Black-box SMTP hardening: raw bytes on a real socket against the running relay.

Each test talks to a fresh relay over loopback exactly as an attacker would (the socket
module, so every CR, LF and NUL is the one written here), and ends by checking that the
relay is still alive and delivers an ordinary message.
"""

from __future__ import annotations

import base64
import email
import re
import ssl
import uuid
from email import policy as email_policy

import pytest

from relay import config as relay_config
from relay.limits import Limits, client_key
from relay.server import warn_if_root
from relay.tls import ensure_self_signed
from tests.conftest import BUYER_ADDR, ORDER, SELLER_ADDR, SELLER_INBOX, seed
from tests.smtp_harness import REPO, RawClient, RunningRelay, Sink, write_config

BUYER2_ADDR = "bob.buyer@mail.example"
ORDER2 = "302-1111111-2222222"


def message(to: str, *, subject: str = f"Your order {ORDER} has shipped",
            body: str = "Hi,\r\n\r\nYour parcel is on its way.\r\n\r\nOwen\r\n",
            sender: str = SELLER_ADDR, extra: str = "", marker: str | None = None) -> bytes:
    marker = marker or uuid.uuid4().hex
    return (f"From: Owen <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{marker}@seller.example>\r\nDate: Mon, 20 Jan 2025 09:05:17 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n"
            f"{body}marker {marker}\r\n").encode()


def assert_crlf_clean(data: bytes) -> None:
    n = data.count(b"\r\n")
    assert data.count(b"\r") == n and data.count(b"\n") == n and b"\0" not in data


def assert_alive(relay, sink, parties) -> None:
    """The daemon still answers and delivers an ordinary message, exactly once."""
    before = len(sink.messages)
    marker = uuid.uuid4().hex
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias,
                            message(parties.buyer_alias, marker=marker))
    assert code == 250, text
    assert len(sink.messages) == before + 1
    out = sink.messages[-1]
    assert out.rcpt_tos == [BUYER_ADDR] and marker.encode() in out.data
    assert_crlf_clean(out.data)


def transaction(client: RawClient, rcpt: str, data: bytes,
                sender: str = SELLER_ADDR) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA with `data` sent verbatim (it must end with CRLF): the last reply."""
    assert client.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    code, text = client.cmd(f"RCPT TO:<{rcpt}>")
    if code != 250:
        return code, text
    code, text = client.cmd("DATA")
    assert code == 354, text
    client.send(data + b".\r\n")
    return client.reply()


@pytest.fixture(scope="module")
def shared(loop_thread, tmp_path_factory):
    """One relay and next hop for the tests that need no configuration of their own."""
    sink = Sink(loop_thread)
    path = write_config(tmp_path_factory.mktemp("hardening"), delivery={
        "mode": "smtp", "smarthost": f"127.0.0.1:{sink.port}"},
        limits={"messages_per_ip_per_minute": 100_000})
    relay = RunningRelay(loop_thread, path)
    relay.sink = sink
    relay.parties = seed(relay.store)
    relay.store.add_buyer("b2", BUYER2_ADDR, "Bob Buyer")
    relay.store.upsert_order(ORDER2, "s1", "b2")
    relay.alias2 = relay.store.aliases(relay.store.pair("s1", "b2"))["buyer"] + "@relay.example"
    yield relay
    relay.close()
    sink.close()


@pytest.fixture
def hard(shared):
    """The shared relay, its next hop emptied and answering normally again."""
    shared.sink.handler.messages.clear()
    shared.sink.handler.reply = None
    yield shared
    shared.sink.handler.reply = None


def connect(relay) -> RawClient:
    client = RawClient(relay.port)
    assert client.greeting[0] == 220
    assert client.ehlo()[0] == 250
    return client


# -- open relay ------------------------------------------------------------------------

RELAY_ATTEMPTS = [
    "<someone@elsewhere.example>",
    "someone@elsewhere.example",
    "<victim%elsewhere.example@relay.example>",
    "<{token}%elsewhere.example@relay.example>",
    "<victim!elsewhere.example@relay.example>",
    "<elsewhere.example!{token}@relay.example>",
    "<@relay.example:victim@elsewhere.example>",
    "<@relay.example,@mx.elsewhere.example:victim@elsewhere.example>",
    '<"victim@elsewhere.example"@relay.example>',
    '<"{token}@elsewhere.example"@relay.example>',
    '<"victim%elsewhere.example"@relay.example>',
    "<postmaster@[127.0.0.1]>",
    "<{token}@[127.0.0.1]>",
    "<{token}@[IPv6:::1]>",
    "<>",
    "<postmaster>",
    "<{token}>",
    "<{token}@relay.example.elsewhere.example>",
    "<{token}@sub.relay.example>",
    "<{token}@relay.example@elsewhere.example>",
    "<{token}@relay.example.>",
    "<{token}+x@relay.example>",
    "<{token}.@relay.example>",
    "<{token}\x01@relay.example>",
    "<{token}\x7f@relay.example>",
    "<t\u00f8ken@relay.example>",
    "<{token}@relay\u2024example>",
]


@pytest.mark.parametrize("form", RELAY_ATTEMPTS)
def test_open_relay_forms_are_refused(hard, form):
    sink = hard.sink
    token = hard.parties.buyer_alias.split("@")[0]
    rcpt = form.replace("{token}", token)
    with connect(hard) as client:
        assert client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
        code, text = client.cmd(f"RCPT TO:{rcpt}".encode())
        assert 500 <= code < 600, (code, text)
        if code == 550:
            assert text.startswith((b"5.7.1", b"5.1.1")), text
            assert b"policy=relay_control" in text or b"policy=known_alias" in text
        assert client.cmd("DATA")[0] == 503  # no recipient was taken
    assert sink.messages == []
    assert_alive(hard, sink, hard.parties)


NORMALIZED_ALIAS = [
    "<{TOKEN}@RELAY.EXAMPLE>",
    "<{token}@Relay.Example>",
    '<"{token}"@relay.example>',
    "{token}@relay.example",
    "<@elsewhere.example:{token}@relay.example>",  # a source route is ignored (RFC 5321 C)
]


@pytest.mark.parametrize("form", NORMALIZED_ALIAS)
def test_spellings_of_an_alias_reach_only_its_buyer(hard, form):
    sink = hard.sink
    token = hard.parties.buyer_alias.split("@")[0]
    rcpt = form.replace("{token}", token).replace("{TOKEN}", token.upper())
    with connect(hard) as client:
        code, text = transaction(client, rcpt.strip("<>"), message(hard.parties.buyer_alias))
    assert code == 250, text
    [out] = sink.messages
    assert out.rcpt_tos == [BUYER_ADDR]


def test_null_sender_is_never_relayed(hard):
    sink = hard.sink
    with connect(hard) as client:
        assert client.cmd("MAIL FROM:<>")[0] == 250
        code, text = client.cmd("RCPT TO:<someone@elsewhere.example>")
        assert (code, text[:5]) == (550, b"5.7.1")
        code, _ = client.cmd(f"RCPT TO:<{hard.parties.buyer_alias}>")
        final = code
        if code == 250:
            assert client.cmd("DATA")[0] == 354
            client.send(message(hard.parties.buyer_alias) + b".\r\n")
            final, text = client.reply()
        assert 500 <= final < 600
    assert sink.messages == []
    assert_alive(hard, sink, hard.parties)


# -- SMTP smuggling --------------------------------------------------------------------

# The end-of-data look-alikes of the SMTP smuggling research (SEC Consult, 2023), each
# followed by a second, smuggled transaction; the relay ends DATA only at CRLF.CRLF and
# refuses data that holds the bare CR, bare LF or NUL these need.
SMUGGLING = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.CRLF": b"\r.\r\n",
    "CRLF-NUL.CRLF": b"\r\n\x00.\r\n",
}


def smuggled(alias2: str) -> bytes:
    return (f"MAIL FROM:<{SELLER_ADDR}>\r\nRCPT TO:<{alias2}>\r\nDATA\r\n".encode()
            + message(alias2, subject=f"SMUGGLED order {ORDER2}", marker="smuggled"))


def assert_nothing_smuggled(sink) -> None:
    assert len(sink.messages) <= 1
    for out in sink.messages:
        assert out.rcpt_tos == [BUYER_ADDR]
        msg = email.message_from_bytes(out.data, policy=email_policy.default)
        assert "SMUGGLED" not in str(msg["Subject"])


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_end_of_data_sequences_are_refused(hard, name):
    relay, sink = hard, hard.sink
    first = message(relay.parties.buyer_alias)[:-2]  # the sequence ends its last line
    with connect(relay) as client:
        data = first + SMUGGLING[name] + smuggled(relay.alias2)
        code, text = transaction(client, relay.parties.buyer_alias, data)
        assert (code, text[:5]) == (550, b"5.6.0"), text
        assert b"policy=smtp_wire" in text
        assert client.cmd("QUIT")[0] == 221  # one answer for one DATA: nothing left over
    assert sink.messages == []
    assert_nothing_smuggled(sink)
    assert_alive(relay, sink, relay.parties)


def test_dot_without_a_line_break_before_it_is_text(hard):
    relay, sink = hard, hard.sink
    first = message(relay.parties.buyer_alias)[:-2]
    with connect(relay) as client:
        data = first + b".\r\n" + smuggled(relay.alias2)  # "...last line.CRLF" is one line
        code, _ = transaction(client, relay.parties.buyer_alias, data)
        assert code == 250 or 500 <= code < 600
        assert client.cmd("QUIT")[0] == 221
    assert_nothing_smuggled(sink)
    assert_alive(relay, sink, relay.parties)


def test_bare_lf_or_nul_in_an_ordinary_message_is_refused(hard):
    sink = hard.sink
    good = message(hard.parties.buyer_alias)
    for bad in (good.replace(b"Owen\r\n", b"Owen\n"),
                good.replace(b"Owen\r\n", b"Owen\rOwen\r\n"),
                good.replace(b"Subject: ", b"Subject: \x00")):
        with connect(hard) as client:
            code, text = transaction(client, hard.parties.buyer_alias, bad)
        assert (code, text[:5]) == (550, b"5.6.0"), text
    assert sink.messages == []
    assert_alive(hard, sink, hard.parties)


def test_commands_must_end_in_crlf(hard):
    sink = hard.sink
    with connect(hard) as client:
        client.send(b"NOOP\n")
        code, text = client.reply()
        assert (code, text[:5]) == (500, b"5.5.2")
        client.send(b"MAIL FROM:<" + SELLER_ADDR.encode() + b">\n")
        code, text = client.reply()
        assert (code, text[:5]) == (500, b"5.5.2")
        client.send(b"RSET\rMAIL FROM:<" + SELLER_ADDR.encode() + b">\r\n")
        code, text = client.reply()
        assert (code, text[:5]) == (500, b"5.5.2")
        client.send(b"NOOP\r\r\n")
        assert client.reply()[0] == 500
        # neither MAIL was executed: this one is not "nested"
        assert client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
    assert_alive(hard, sink, hard.parties)


def test_pipelined_transactions_stay_separate(hard):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    one, two = message(alias, marker="pipelined-one"), message(alias, marker="pipelined-two")
    envelope = f"MAIL FROM:<{SELLER_ADDR}>\r\nRCPT TO:<{alias}>\r\nDATA\r\n".encode()
    with connect(hard) as client:
        client.send(envelope + one + b".\r\n" + envelope + two + b".\r\n" + b"QUIT\r\n")
        codes = [client.reply()[0] for _ in range(9)]
        assert client.at_eof()
    assert codes == [250, 250, 354, 250, 250, 250, 354, 250, 221]
    assert [m.data.count(b"pipelined-") for m in sink.messages] == [1, 1]
    assert b"pipelined-one" in sink.messages[0].data
    assert b"pipelined-two" in sink.messages[1].data


# -- sizes and long lines --------------------------------------------------------------

def test_size_over_the_limit_is_refused_at_mail_and_by_content(relay_factory, sink):
    relay = relay_factory(server={"max_message_bytes": 3000})
    parties = seed(relay.store)
    with connect(relay) as client:
        code, text = client.cmd(f"MAIL FROM:<{SELLER_ADDR}> SIZE=3001")
        assert (code, text[:5]) == (552, b"5.3.4"), text
        code, text = client.cmd(f"MAIL FROM:<{SELLER_ADDR}> SIZE=99999999999999999999")
        assert (code, text[:5]) == (552, b"5.3.4"), text
        assert client.cmd(f"MAIL FROM:<{SELLER_ADDR}> SIZE=2000")[0] == 250
        assert client.cmd(f"RCPT TO:<{parties.buyer_alias}>")[0] == 250
        assert client.cmd("DATA")[0] == 354
        client.send(message(parties.buyer_alias, body="y" * 70 + "\r\n") * 60 + b".\r\n")
        code, text = client.reply()
        assert (code, text[:5]) == (552, b"5.3.4"), text
        assert client.cmd("RSET")[0] == 250  # the session goes on
    assert sink.messages == []
    assert_alive(relay, sink, parties)


def test_long_command_lines_are_refused_and_the_session_stays_in_step(hard):
    sink = hard.sink
    with connect(hard) as client:
        for line in ("NOOP " + "x" * 995,  # 1000 bytes
                     f"MAIL FROM:<{'a' * 976}@seller.example>",
                     "RCPT TO:<" + "b" * 5000 + "@relay.example>"):
            code, text = client.cmd(line)
            assert (code, text[:5]) == (500, b"5.5.2"), (len(line), text)
            assert client.cmd("NOOP")[0] == 250
    assert_alive(hard, sink, hard.parties)


def test_999_byte_header_line_is_handled_and_1000_byte_line_refused(hard):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    long_subject = f"Order {ORDER} " + "z" * (999 - len(f"Subject: Order {ORDER} "))
    data = message(alias, subject=long_subject)
    assert max(map(len, data.split(b"\r\n"))) == 999
    with connect(hard) as client:
        code, text = transaction(client, alias, data)
        assert code == 250 or 500 <= code < 600, text
        too_long = message(alias, body="w" * 1000 + "\r\n")
        code, text = transaction(client, alias, too_long)
        assert (code, text[:5]) == (500, b"5.5.2"), text
    for out in sink.messages:
        assert max(map(len, out.data.split(b"\r\n"))) <= 998
    assert all(b"w" * 1000 not in out.data for out in sink.messages)
    assert_alive(hard, sink, hard.parties)


# -- NUL and invalid UTF-8 -------------------------------------------------------------

def test_nul_and_invalid_utf8_in_commands(hard):
    sink = hard.sink
    alias = hard.parties.buyer_alias.encode()
    with connect(hard) as client:
        code, text = client.cmd(b"MAIL FROM:<shop\x00@seller.example>")
        assert (code, text[:5]) == (500, b"5.5.2")
        code, text = client.cmd(b"\xffNOOP")
        assert (code, text[:5]) == (500, b"5.5.1")
        assert client.cmd(b"EHLO \xff\xfe.example")[0] == 250
        assert client.cmd(b"MAIL FROM:<\xff\xfe@seller.example>")[0] == 250
        code, text = client.cmd(b"RCPT TO:<" + alias + b">")
        assert (code, text[:5]) == (550, b"5.7.1")  # not an authorized sender
        assert client.cmd("RSET")[0] == 250
        assert client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
        code, text = client.cmd(b"RCPT TO:<\xff" + alias + b">")
        assert (code, text[:5]) == (550, b"5.7.1") and b"policy=relay_control" in text
    assert sink.messages == []
    assert_alive(hard, sink, hard.parties)


def test_invalid_utf8_in_headers_is_delivered_clean_or_refused(hard):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    data = (message(alias, subject=f"Order {ORDER} BAD")
            .replace(b"BAD", b"\xff\xfe\xc3(")
            .replace(b"From: Owen", b"From: Ow\xe9n \xff"))
    with connect(hard) as client:
        code, text = transaction(client, alias, data)
    assert code == 250 or 500 <= code < 600, text
    for out in sink.messages:
        head = out.data.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()
        assert email.message_from_bytes(out.data, policy=email_policy.default)["Subject"]
    assert_alive(hard, sink, hard.parties)


# -- broken MIME -----------------------------------------------------------------------

def _nested(depth: int) -> str:
    body = "Content-Type: text/plain\r\n\r\nthe innermost part\r\n"
    for level in range(depth):
        body = (f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n'
                f"--b{level}\r\n{body}--b{level}--\r\n")
    return body


BROKEN_MIME = {
    "boundary never used": 'Content-Type: multipart/mixed; boundary="nope"\r\n\r\n'
                           "no parts at all\r\n",
    "boundary mismatch": 'Content-Type: multipart/mixed; boundary="a"\r\n\r\n'
                         "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
    "unterminated": 'Content-Type: multipart/alternative; boundary="a"\r\n\r\n'
                    "--a\r\nContent-Type: text/html\r\n\r\n<p>hi\r\n",
    "no boundary parameter": "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n",
    "empty boundary": 'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n\r\nhi\r\n',
    "nested 100 multiparts": _nested(100),
    "nested 100 messages": "".join(
        "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n" for _ in range(100))
        + "Content-Type: text/plain\r\n\r\ndeep\r\n",
    "garbage content type": "Content-Type: ;;;==//\r\nContent-Transfer-Encoding: base64\r\n"
                            "\r\n!!!not base64!!!\r\n",
}


@pytest.mark.parametrize("name", list(BROKEN_MIME))
def test_broken_mime_is_delivered_parseable_or_refused(hard, name):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    head = (f"From: Owen <{SELLER_ADDR}>\r\nTo: {alias}\r\n"
            f"Subject: Your order {ORDER}\r\nMIME-Version: 1.0\r\n")
    with connect(hard) as client:
        code, text = transaction(client, alias, (head + BROKEN_MIME[name]).encode())
    assert code == 250 or 500 <= code < 600, text  # never an internal error (451)
    for out in sink.messages:
        msg = email.message_from_bytes(out.data, policy=email_policy.default)
        assert sum(1 for _ in msg.walk()) >= 1
        assert_crlf_clean(out.data)
    assert_alive(hard, sink, hard.parties)


def test_message_without_from_is_refused(hard):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    data = message(alias).replace(f"From: Owen <{SELLER_ADDR}>\r\n".encode(), b"")
    with connect(hard) as client:
        code, text = transaction(client, alias, data)
    assert code == 550 and b"policy=authorized_sender" in text
    assert sink.messages == []


# -- headers: From, Bcc, loops ---------------------------------------------------------

TWO_FROMS = [
    f"From: <{SELLER_ADDR}>\r\nFrom: <{SELLER_ADDR}>\r\n",
    f"From: <{SELLER_ADDR}>\r\nfrom: <evil@elsewhere.example>\r\n",
    f"From: <{SELLER_ADDR}>, <evil@elsewhere.example>\r\n",
    f"From: Owen <{SELLER_ADDR}>, Eve <{SELLER_ADDR}>\r\n",
    f"From: team: <{SELLER_ADDR}>, <evil@elsewhere.example>;\r\n",
]


@pytest.mark.parametrize("froms", TWO_FROMS)
def test_two_from_headers_or_addresses_are_refused_both_ways(hard, froms):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    seller = message(alias).replace(f"From: Owen <{SELLER_ADDR}>\r\n".encode(), froms.encode())
    buyer = message(hard.parties.seller_alias, sender=BUYER_ADDR).replace(
        f"From: Owen <{BUYER_ADDR}>\r\n".encode(),
        froms.replace(SELLER_ADDR, BUYER_ADDR).encode())
    with connect(hard) as client:
        code, text = transaction(client, alias, seller)
        assert code == 550 and b"policy=authorized_sender" in text, text
        code, text = transaction(client, hard.parties.seller_alias, buyer, sender=BUYER_ADDR)
        assert code == 550 and b"policy=buyer_sender" in text, text
    assert sink.messages == []


def test_bcc_never_passes(hard):
    sink = hard.sink
    alias = hard.parties.buyer_alias
    data = message(alias, extra="Bcc: hidden@elsewhere.example\r\n"
                                "Resent-Bcc: <hidden2@elsewhere.example>\r\n"
                                f"Cc: {SELLER_INBOX}\r\n")
    with connect(hard) as client:
        code, text = transaction(client, alias, data)
    assert code == 250, text
    [out] = sink.messages
    assert out.rcpt_tos == [BUYER_ADDR]
    assert not re.search(rb"^(resent-)?(bcc|cc):", out.data, re.I | re.M)
    assert b"hidden" not in out.data and SELLER_INBOX.encode() not in out.data


def test_more_received_headers_than_max_hops_is_a_loop(relay_factory, sink):
    relay = relay_factory(limits={"max_hops": 3})
    parties = seed(relay.store)
    hops = "".join(f"Received: from hop{i}.elsewhere.example by mx{i}.elsewhere.example; "
                   f"Mon, 20 Jan 2025 09:0{i}:00 +0000\r\n" for i in range(4))
    with connect(relay) as client:
        code, text = transaction(client, parties.buyer_alias,
                                 hops.encode() + message(parties.buyer_alias))
        assert (code, text[:5]) == (554, b"5.4.6"), text
        three = "".join(hops.splitlines(keepends=True)[:3]).encode()
        code, text = transaction(client, parties.buyer_alias,
                                 three + message(parties.buyer_alias))
        assert code == 250, text
    [out] = sink.messages
    assert b"Received" not in out.data


# -- the next hop's answers ------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    "554 5.7.1 <jane.buyer@mail.example> rejected: spam",
    "552 5.2.2 mailbox jane.buyer@mail.example is full",
    "550 5.1.1 user unknown (JANE.BUYER@MAIL.EXAMPLE)",
    "451 4.3.0 try jane.buyer@mail.example later",
    "452 4.2.2 over quota for jane.buyer@mail.example",
    "421 4.7.0 mx.mail.example closing",
])
def test_next_hop_answer_is_passed_back_in_class_without_addresses(hard, answer):
    sink = hard.sink
    sink.handler.reply = lambda data: answer
    alias = hard.parties.buyer_alias
    with connect(hard) as client:
        code, text = transaction(client, alias, message(alias))
    assert code // 100 == int(answer[0]), (answer, code, text)
    assert text[:1] == answer[0].encode()  # the enhanced status class too
    assert b"mail.example" not in text.lower() and b"jane" not in text.lower()
    assert sink.messages == []
    sink.handler.reply = None
    assert_alive(hard, sink, hard.parties)


# -- STARTTLS --------------------------------------------------------------------------

def test_commands_sent_with_starttls_are_discarded(relay_factory, sink, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    assert ensure_self_signed(cert, key, "relay.example")
    relay = relay_factory(with_submission=True,
                          submission={"tls_cert": str(cert), "tls_key": str(key)})
    seed(relay.store)
    from relay.passwords import hash_password

    relay.store.set_password_hash("s1", hash_password("correct horse battery"))
    plain = "AHMxAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ=="  # \0s1\0correct horse battery
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    with RawClient(relay.submission_port) as client:
        assert client.ehlo()[0] == 250
        # the injected commands ride in the same packet as STARTTLS, in plaintext
        client.send(f"STARTTLS\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<{SELLER_ADDR}>\r\n")
        assert client.reply()[0] == 220
        client.starttls(context)
        code, text = client.ehlo("laptop.example")
        assert code == 250 and text.startswith(b"relay.example"), text  # not the AUTH's 235
        code, text = client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")
        assert (code, text[:5]) == (530, b"5.7.0"), text  # not authenticated by injection
        # an interactive AUTH: the answers to 334 are not commands
        assert client.cmd("AUTH LOGIN")[0] == 334
        assert client.cmd(base64.b64encode(b"s1"))[0] == 334
        assert client.cmd(base64.b64encode(b"correct horse battery"))[0] == 235
        assert client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
    with RawClient(relay.submission_port) as client:
        client.ehlo()
        assert client.cmd("STARTTLS")[0] == 220
        client.starttls(context)
        client.ehlo()
        assert client.cmd("AUTH PLAIN")[0] == 334
        assert client.cmd(plain)[0] == 235
    assert sink.messages == []


# -- limits ----------------------------------------------------------------------------

def test_concurrent_sessions_are_limited_per_client_and_in_all(relay_factory, sink):
    relay = relay_factory(limits={"max_connections": 3, "max_connections_per_ip": 2})
    a, b = RawClient(relay.port), RawClient(relay.port)
    assert a.greeting[0] == b.greeting[0] == 220
    with RawClient(relay.port) as third:
        assert third.greeting[0] == 421 and third.greeting[1].startswith(b"4.7.0")
        assert third.at_eof()
    with RawClient(relay.port, source="127.0.0.2") as other:  # another client: admitted
        assert other.greeting[0] == 220
        with RawClient(relay.port, source="127.0.0.3") as fourth:  # over the total
            assert fourth.greeting[0] == 421 and fourth.at_eof()
    assert a.cmd("QUIT")[0] == 221 and a.at_eof()  # a slot is free again
    a.close()
    with RawClient(relay.port) as again:
        assert again.greeting[0] == 220
        assert again.ehlo()[0] == 250
    b.close()


def test_commands_per_session_are_capped(relay_factory, sink):
    relay = relay_factory(limits={"max_commands": 5, "max_unknown_commands": 2})
    parties = seed(relay.store)
    with connect(relay) as client:  # EHLO was the first command
        for _ in range(4):
            assert client.cmd("NOOP")[0] == 250
        code, text = client.cmd("NOOP")
        assert (code, text[:5]) == (421, b"4.7.0")
        assert client.at_eof()
    with connect(relay) as client:
        for verb in ("XYZZY", "\x1b[2J"):
            code, text = client.cmd(verb)
            assert (code, text[:5]) == (500, b"5.5.1")
        code, text = client.cmd("BDAT 10")  # unknown here too: the third
        assert (code, text[:5]) == (421, b"4.7.0")
        assert client.at_eof()
    assert_alive(relay, sink, parties)


def test_message_rate_per_client_is_limited(relay_factory, sink):
    relay = relay_factory(limits={"messages_per_ip_per_minute": 3})
    parties = seed(relay.store)
    with connect(relay) as client:
        for _ in range(3):
            assert client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
            assert client.cmd("RSET")[0] == 250
        code, text = client.cmd(f"MAIL FROM:<{SELLER_ADDR}>")
        assert (code, text[:5]) == (450, b"4.7.1")
    with RawClient(relay.port, source="127.0.0.2") as other:  # per client
        assert other.ehlo()[0] == 250
        assert other.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
    assert sink.messages == []
    assert parties  # seeded, nothing sent


def test_clients_are_counted_by_ipv4_address_or_ipv6_64_and_refill_over_time():
    assert client_key(("192.0.2.7", 25)) == "192.0.2.7"
    assert client_key(("::ffff:192.0.2.7", 25, 0, 0)) == "192.0.2.7"
    assert client_key(("2001:db8:1:2:aaaa::1", 25, 0, 0)) == client_key(
        ("2001:db8:1:2:ffff::9", 25, 0, 0)) == "2001:db8:1:2::/64"
    assert client_key(("2001:db8:1:3::1", 25, 0, 0)) != client_key(("2001:db8:1:2::1", 25))
    assert client_key("/run/relay.sock") == ""
    now = [0.0]
    limits = Limits(messages_per_ip_per_minute=2, clock=lambda: now[0])
    assert limits.allow_message("a") and limits.allow_message("a")
    assert not limits.allow_message("a") and limits.allow_message("b")
    now[0] += 30  # one token back after half a minute
    assert limits.allow_message("a") and not limits.allow_message("a")


# -- timeouts --------------------------------------------------------------------------

def test_idle_timer_sleeps_while_the_handler_delivers(relay_factory, sink):
    import asyncio

    relay = relay_factory(server={"timeout": 1}, delivery={"timeout": 1},
                          limits={"data_timeout": 3})
    parties = seed(relay.store)
    delivery = relay.server.pipeline.delivery
    real = delivery.deliver

    async def slow(mail_from, rcpt, data):  # a slow next hop: longer than the idle timeout
        await asyncio.sleep(1.5)
        await real(mail_from, rcpt, data)

    delivery.deliver = slow
    with connect(relay) as client:
        code, text = transaction(client, parties.buyer_alias, message(parties.buyer_alias))
        assert code == 250, text  # not cut by the 1 s idle timer
        assert client.cmd("NOOP")[0] == 250
        assert client.at_eof()  # ... which runs again once the answer is out: idle, closed
    assert len(sink.messages) == 1


def test_a_hung_delivery_is_answered_451_within_data_timeout(relay_factory, sink):
    import asyncio

    relay = relay_factory(delivery={"timeout": 1}, limits={"data_timeout": 2})
    parties = seed(relay.store)

    async def hung(mail_from, rcpt, data):
        await asyncio.Event().wait()

    relay.server.pipeline.delivery.deliver = hung
    with connect(relay) as client:
        code, text = transaction(client, parties.buyer_alias, message(parties.buyer_alias))
        assert (code, text[:5]) == (451, b"4.4.2"), text
        assert client.cmd("NOOP")[0] == 250
    assert sink.messages == []
    assert relay.server.handler.inflight == 0


# -- configuration and privileges ------------------------------------------------------

@pytest.mark.parametrize("limits, error", [
    ({"max_connections": 0}, "limits.max_connections"),
    ({"max_connections_per_ip": 300}, "limits.max_connections_per_ip"),
    ({"data_timeout": 60}, "limits.data_timeout"),  # not longer than delivery.timeout
    ({"data_timeout": 600}, "limits.data_timeout"),
    ({"max_hops": "30"}, "limits.max_hops"),
    ({"per_minute": 3}, "limits.per_minute"),
])
def test_bad_limits_stop_start_up(limits, error):
    with pytest.raises(relay_config.ConfigError, match=re.escape(error)):
        relay_config.load(None, overrides={"limits": limits})


def test_shipped_limits_are_the_defaults():
    shipped = relay_config.load(REPO / "conf" / "relay.toml")
    assert shipped["limits"] == relay_config.DEFAULTS["limits"]


def test_running_as_root_is_warned_about(monkeypatch):
    import os

    class Log:
        events: list[str] = []

        def warning(self, event, **fields):
            self.events.append(event)

    log = Log()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert warn_if_root(log) is True
    assert log.events == ["relay.running_as_root"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert warn_if_root(log) is False
    assert log.events == ["relay.running_as_root"]


def test_systemd_unit_runs_unprivileged_and_outlasts_the_shutdown_grace():
    unit = (REPO / "conf" / "relay.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["User"] == "relay"
    assert settings["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert settings["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert "/var/lib/relay" in settings["ReadWritePaths"]
    assert settings["UMask"] == "0077"
    assert "relay serve --config /etc/relay/relay.toml" in settings["ExecStart"]
    grace = relay_config.DEFAULTS["limits"]["data_timeout"] + 5
    assert int(settings["TimeoutStopSec"]) > grace
