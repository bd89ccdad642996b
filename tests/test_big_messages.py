"""Big messages pass without copies: base64 runs stay views of the received bytes
(relay.parsing), the DKIM body hash reads chunks (relay.dkim_body) and delivery streams
them (relay.delivery_stream). Each shortcut must give exactly what the plain path gives."""

from __future__ import annotations

import base64
import hashlib
import random
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.attachments import attachments, decoded_size
from policies.text import visible_text
from relay import parsing
from relay.config import HostPort
from relay.delivery import SmtpDelivery
from relay.dkim import Signer
from relay.dkim_body import relaxed_body_hash
from relay.rewrite import RewritePlan, rewrite
from tests.conftest import ORDER, SELLER_ADDR, seed
from tests.test_dkim import dnsfunc, table_for

SELLER = "shop@seller.example"
SELLER_ALIAS = "s0alias@relay.example"
PLAN = RewritePlan("Shop", SELLER_ALIAS, "Jane", "jane@mail.example", "<r1@relay.example>",
                   None, (), {SELLER: SELLER_ALIAS})
RNG = random.Random(5)
PHOTO = RNG.randbytes(400_000)


def crlf_bytes(msg) -> bytes:
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def photo(name: str = "photo.jpg") -> MIMEBase:
    part = MIMEApplication(PHOTO, "jpeg", name=name)
    part.replace_header("Content-Type", f'image/jpeg; name="{name}"')
    part.add_header("Content-Disposition", "attachment", filename=name)
    return part


def big_text() -> MIMEText:
    # base64 text: its run must go back into the tree, so the address in it is replaced
    words = " ".join(f"word{i}" for i in range(12_000))
    return MIMEText(f"{words}\nwrite to {SELLER} please\n{words}\n", "plain", "utf-8")


def message(*parts, preamble: str | None = None) -> bytes:
    outer = MIMEMultipart("mixed")
    outer["From"] = SELLER
    outer["Subject"] = "Your order"
    outer["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"  # else the rewrite writes the time now
    outer.attach(MIMEText(f"Hello, reach me at {SELLER}.\n"))
    for part in parts:
        outer.attach(part)
    outer.preamble = preamble
    return crlf_bytes(outer)


def encoded_rfc822() -> MIMEMessage:
    inner = MIMEMultipart("mixed")
    inner["From"] = SELLER
    inner.attach(MIMEText("forwarded\n"))
    inner.attach(photo("inner.jpg"))
    wrapper = MIMEMessage(inner)
    data = base64.encodebytes(crlf_bytes(inner)).decode()
    wrapper.set_payload(data)
    wrapper["Content-Transfer-Encoding"] = "base64"
    return wrapper


CASES = {
    "photo": lambda: message(photo()),
    "two photos": lambda: message(photo(), photo("second.jpg")),
    "base64 text": lambda: message(big_text(), photo()),
    "encoded message/rfc822": lambda: message(encoded_rfc822()),
    "run in the preamble": lambda: message(photo(), preamble=base64.encodebytes(
        PHOTO[:60_000]).decode().replace("\n", "\r\n")),
}


@pytest.mark.parametrize("case", CASES)
def test_stubbed_parse_gives_what_the_plain_parse_gives(case):
    raw = CASES[case]()
    plain = parsing._parser.parsebytes(raw)
    lean = parsing.parse(bytearray(raw))
    assert rewrite(lean, PLAN) == rewrite(plain, PLAN)
    assert visible_text(lean) == visible_text(plain)
    assert ([decoded_size(p) for p in attachments(lean)]
            == [len(p.get_payload(decode=True) or b"") for p in attachments(plain)])
    assert SELLER.encode() not in rewrite(lean, PLAN)


def test_a_photo_stays_a_view_of_the_received_bytes():
    raw = bytearray(CASES["base64 text"]())
    msg = parsing.parse(raw)
    kept = [p for p in msg.walk() if isinstance(p, parsing.Part) and p.runs]
    assert [p.get_content_type() for p in kept] == ["image/jpeg"]
    [run] = kept[0].runs.values()
    assert run.data.obj is raw  # no copy
    # the big base64 text was put back: its address is searched like any text
    assert SELLER in visible_text(msg)


def test_a_sender_cannot_name_a_run():
    raw = message(MIMEText("RELAYRUN0123456789ABCDEFN0X and RELAYRUN\n"), photo())
    plain = parsing._parser.parsebytes(raw)
    assert rewrite(parsing.parse(bytearray(raw)), PLAN) == rewrite(plain, PLAN)


line = st.lists(st.sampled_from([b"a", b"b c", b" ", b"\t", b"x \t y", b"AAAA", b"."]),
                max_size=4).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(line, max_size=10), st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]),
       st.data())
def test_relaxed_body_hash_over_chunks_is_dkimpys(lines, end, data):
    body = b"\r\n".join(lines) + end
    starts = [i for i in range(1, len(body)) if body[i - 2:i] == b"\r\n"]
    cuts = sorted(data.draw(st.sets(st.sampled_from(starts))) if starts else set())
    bounds = [0, *cuts, len(body)]
    chunks = [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    chunks = [memoryview(c) if data.draw(st.booleans()) else c for c in chunks]
    assert relaxed_body_hash(chunks) == hashlib.sha256(Relaxed.canonicalize_body(body)).digest()


SMALL = b"Subject: small\r\n\r\nx\r\n"


def test_streamed_delivery_is_byte_exact_and_keeps_the_connection(loop_thread, sink):
    run = base64.encodebytes(PHOTO).replace(b"\n", b"\r\n")
    chunks = [b"Subject: big\r\n\r\n.starts with a dot\r\n.\r\nend\r\n", memoryview(run),
              b"..two dots\r\nlast line without CRLF"]
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)

    async def send():
        await delivery.deliver("a@relay.example", "jane@mail.example", chunks)
        await delivery.deliver("a@relay.example", "jane@mail.example", SMALL)
        pooled = len(delivery._idle)
        await delivery.close()
        return pooled

    assert loop_thread.run(send()) == 1
    big, small = sink.messages
    assert big.data == b"".join(chunks) + b"\r\n"
    assert small.data == SMALL
    assert len(sink.sessions) == 1


def test_a_big_photo_reaches_the_buyer_intact_and_signed(relay, sink):
    parties = seed(relay.store)
    outer = MIMEMultipart("mixed")
    outer["From"] = SELLER_ADDR
    outer["To"] = parties.buyer_alias
    outer["Subject"] = f"Photos of your order {ORDER}"
    outer.attach(MIMEText(f"Here is the photo of your board, order {ORDER}.\n"))
    outer.attach(photo())
    code, text = relay.send(SELLER_ADDR, parties.buyer_alias, crlf_bytes(outer))
    assert code == 250, text
    [out] = sink.messages
    assert dkim.verify(out.data, dnsfunc=dnsfunc(table_for(Signer.from_config(relay.config))))
    forwarded = parsing._parser.parsebytes(out.data)
    [jpeg] = [p for p in forwarded.walk() if p.get_content_type() == "image/jpeg"]
    assert jpeg.get_payload(decode=True) == PHOTO
    assert SELLER_ADDR.encode() not in out.data



def test_a_lone_lf_or_cr_never_reaches_the_next_hop(loop_thread, sink):
    # relay.wire refuses them on the way in; delivery still writes CRLF only, and a dot
    # after a lone LF is doubled, so "<LF>.<CR><LF>" cannot end the data early
    delivery = SmtpDelivery(HostPort("127.0.0.1", sink.port), "relay.example", timeout=5)
    chunks = [b"Subject: x\r\n\r\nbare lf\n.\r\nbare cr\rend\r\n"]

    async def send():
        await delivery.deliver("a@relay.example", "jane@mail.example", chunks)
        await delivery.close()

    loop_thread.run(send())
    [out] = sink.messages
    assert out.data == b"Subject: x\r\n\r\nbare lf\r\n.\r\nbare cr\r\nend\r\n"
