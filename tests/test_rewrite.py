"""Unit tests of the anonymizing rewrite (relay.rewrite): pure, no network, no database."""

from __future__ import annotations

import base64
import html
import re
import urllib.parse
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rewrite import RewritePlan, rewrite

SELLER = "shop@seller.example"
SELLER_INBOX = "orders@seller.example"
BUYER = "jane.buyer@mail.example"
SELLER_ALIAS = "k3x9m2p7q4@relay.example"
BUYER_ALIAS = "b8n5v1c6z0@relay.example"
REPLACEMENTS = {SELLER: SELLER_ALIAS, SELLER_INBOX: SELLER_ALIAS, BUYER: BUYER_ALIAS}
SELLER_ADDRS = (SELLER, SELLER_INBOX)

ALLOWED_TOP = ["From", "To", "Reply-To", "Message-ID", "In-Reply-To", "References", "Date",
               "Subject", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
               "Content-Language", "Content-Disposition"]

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 3


def parse(raw: bytes) -> Message:
    return BytesParser(policy=email_policy.compat32).parsebytes(raw)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


def plan(**changes) -> RewritePlan:
    fields = dict(from_name="Acme Shop", from_addr=SELLER_ALIAS, to_name="Jane Buyer",
                  to_addr=BUYER, message_id="<r1a2b3@relay.example>", in_reply_to=None,
                  references=(), replacements=REPLACEMENTS)
    fields.update(changes)
    return RewritePlan(**fields)


def run(raw: bytes, **changes) -> bytes:
    return rewrite(parse(raw), plan(**changes))


def header_block(out: bytes) -> bytes:
    return out.split(b"\r\n\r\n", 1)[0]


def header_names(out: bytes) -> list[str]:
    return [line.split(b":", 1)[0].decode() for line in header_block(out).split(b"\r\n")
            if line and line[:1] not in b" \t"]


def decoded(value) -> str:
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:
        return str(value)


def visible_texts(out: bytes):
    """Every way a reader can see the output: raw, and each part's decoded headers and body.

    The top-level To header is left out: it is the recipient's own address.
    """
    yield re.sub(r"^To: [^\r\n]*\r\n", "", out.decode("latin-1"), count=1, flags=re.M)
    top = parse(out)
    for part in top.walk():
        for name, value in part.items():
            if part is top and name == "To":
                continue
            yield f"{name}: {decoded(value)}"
        yield part.get_filename() or ""
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            try:
                text = payload.decode(part.get_content_charset() or "utf-8", "replace")
            except LookupError:
                text = payload.decode("latin-1")
            text = re.sub(r"\r?\n[ \t]", "", text)  # iCalendar/vCard unfolding
            yield text
            yield html.unescape(text)
            yield urllib.parse.unquote(html.unescape(text))


def assert_absent(out: bytes, addrs) -> None:
    for text in visible_texts(out):
        low = text.lower()
        for addr in addrs:
            assert addr not in low, f"{addr} leaked in: {text[:300]!r}"


# -- the big one -----------------------------------------------------------------------

# Hand-encoded quoted-printable: soft line breaks split addresses, "=40" hides an "@".
PLAIN_QP = """Hello Jane,

your parcel ships today. Questions? Write to SHOP@SELLER.EXAMPLE or orders@s=
eller.example, or click mailto:shop@seller.example?subject=3DOrder. Gr=C3=BC=
=C3=9Fe! An escaped one: shop=40seller.example.

On Mon, 1 Dec 2025 at 09:12, Jane Buyer <jane.buyer@mail.example> wrote:
> Please ship to my office. Reach me at jane.buyer@mail.example.
> > On Sun, Acme Shop <shop@seller.example> wrote:
> > > thanks!
"""

HTML = """<html><body>
<p>Contact <a href="mailto:shop@seller.example">shop&#64;seller.example</a>,
<a href="mailto:shop%40seller.example">mail us</a>, orders&commat;seller.example,
or Orders&#x40;Seller.Example.</p>
<blockquote>On Mon, Jane Buyer &lt;jane.buyer@mail.example&gt; wrote:<br>
Please send it to jane.buyer&#0064;mail.example</blockquote>
</body></html>
"""

CALENDAR = """BEGIN:VCALENDAR
VERSION:2.0
METHOD:REQUEST
BEGIN:VEVENT
UID:delivery-302@seller.example
ORGANIZER;CN=Acme Shop:mailto:shop@seller.example
ATTENDEE;CN=Jane Buyer;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:jane.b
 uyer@mail.example
DESCRIPTION:Delivery slot. Questions to orders@seller.example
END:VEVENT
END:VCALENDAR
"""

VCARD = """BEGIN:VCARD
VERSION:3.0
FN:Acme Shop
EMAIL;TYPE=work:orders@seller.example
END:VCARD
"""

UNTOUCHED = "Delivery window: 9-12.\nNothing personal in here.\n"


def planted_message() -> bytes:
    return crlf(f"""Return-Path: <shop@seller.example>
Received: from mx.seller.example (mx.seller.example [203.0.113.7])
\tby mx.relay.example with ESMTPS id 4Q; for <jane.buyer@mail.example>
X-Originating-IP: [203.0.113.7]
Authentication-Results: mx.relay.example; dkim=pass header.i=@seller.example;
 spf=pass smtp.mailfrom=shop@seller.example
DKIM-Signature: v=1; a=rsa-sha256; d=seller.example; i=shop@seller.example; s=s1;
 h=from:to:subject; bh=abc=; b=def=
ARC-Seal: i=1; a=rsa-sha256; cv=none; d=seller.example; s=arc; b=xyz=
Autocrypt: addr=shop@seller.example; keydata=mQINBGXyZAbCdEf
Disposition-Notification-To: shop@seller.example
Return-Receipt-To: <shop@seller.example>
From: Acme Shop <shop@seller.example>
Sender: SHOP@seller.example
Reply-To: orders@seller.example
To: Jane Buyer <jane.buyer@mail.example>
Cc: orders@seller.example
Bcc: shop@seller.example
X-Mailer: SellerMail 1.0 (account shop@seller.example)
Subject: Order 302-4418760 =?utf-8?q?=E2=80=93_questions_to?= orders@seller.example
Date: Mon, 01 Dec 2025 10:15:00 +0100
Message-ID: <123.shop@seller.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer-b"

This is a multi-part message in MIME format.
--outer-b
Content-Type: multipart/alternative; boundary="alt-b"

--alt-b
Content-Type: text/plain; charset=utf-8; format=flowed
Content-Transfer-Encoding: quoted-printable

{PLAIN_QP}
--alt-b
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

{b64(HTML.encode())}
--alt-b--

--outer-b
Content-Type: text/calendar; method=REQUEST; charset=utf-8
Content-Transfer-Encoding: 7bit

{CALENDAR}
--outer-b
Content-Type: text/vcard; charset=utf-8
Content-Disposition: attachment; filename="acme.vcf"

{VCARD}
--outer-b
Content-Type: message/rfc822

Received: from mail.example by mx.seller.example; for <shop@seller.example>
Autocrypt: addr=jane.buyer@mail.example; keydata=mQINBGXyZAbCdEf
From: Jane Buyer <jane.buyer@mail.example>
To: Acme Shop <shop@seller.example>
Cc: =?utf-8?q?Orders?= <orders@seller.example>
Subject: Where is my parcel?
Date: Sun, 30 Nov 2025 18:00:00 +0000
Content-Type: text/plain; charset=utf-8

Hi shop@seller.example, where is it? -- jane.buyer@mail.example

--outer-b
Content-Type: application/pdf; name="invoice-shop@seller.example.pdf"
Content-Disposition: attachment; filename="invoice-shop@seller.example.pdf"
Content-Description: Invoice for jane.buyer@mail.example
Content-Transfer-Encoding: base64

{b64(PDF)}
--outer-b
Content-Type: application/octet-stream
Content-Disposition: attachment;
 filename*0*=utf-8''label-orders%40sel;
 filename*1*=ler.example.bin
Content-Transfer-Encoding: base64

{b64(b"binary label data")}
--outer-b
Content-Type: image/png; name="map.png"
Content-Transfer-Encoding: base64

{b64(PNG)}
--outer-b
Content-Type: text/plain; charset=us-ascii

{UNTOUCHED}
--outer-b--
""")


def test_twenty_planted_addresses_never_reach_the_recipient() -> None:
    raw = planted_message()
    assert sum(raw.lower().count(a.encode()) for a in (*SELLER_ADDRS, BUYER)) >= 20
    out = run(raw)

    # Sender's real addresses: nowhere, in any form, in any part.
    low = out.lower()
    for addr in SELLER_ADDRS:
        assert addr.encode() not in low
    # The recipient's own address appears once: in To. Everywhere else it is the alias.
    assert low.count(BUYER.encode()) == 1
    assert re.search(rb"^To: .*<jane\.buyer@mail\.example>\r?$", header_block(out), re.M)
    assert_absent(out, (*SELLER_ADDRS, BUYER))

    msg = parse(out)
    parts: dict[str, Message] = {}
    for part in msg.walk():
        parts.setdefault(part.get_content_type(), part)
    plain = parts["text/plain"].get_payload(decode=True).decode()
    assert (f"Write to {SELLER_ALIAS} or {SELLER_ALIAS}, or click mailto:{SELLER_ALIAS}"
            f"?subject=Order. Grüße! An escaped one: {SELLER_ALIAS}.") in plain.replace("\r\n", " ")
    assert f"Jane Buyer <{BUYER_ALIAS}> wrote:" in plain
    assert f"> Please ship to my office. Reach me at {BUYER_ALIAS}." in plain
    assert f"> > On Sun, Acme Shop <{SELLER_ALIAS}> wrote:" in plain
    assert parts["text/plain"]["Content-Transfer-Encoding"] == "quoted-printable"

    page = parts["text/html"].get_payload(decode=True).decode()
    assert f'href="mailto:{SELLER_ALIAS}"' in page
    assert f"Jane Buyer &lt;{BUYER_ALIAS}&gt; wrote:" in page
    assert parts["text/html"]["Content-Transfer-Encoding"] == "base64"

    ics = parts["text/calendar"].get_payload(decode=True).decode()
    unfolded = re.sub(r"\r?\n[ \t]", "", ics)
    assert f"ORGANIZER;CN=Acme Shop:mailto:{SELLER_ALIAS}" in unfolded
    assert f"RSVP=TRUE:mailto:{BUYER_ALIAS}" in unfolded
    assert all(len(line.encode()) <= 75 for line in ics.splitlines())

    vcard = parts["text/vcard"].get_payload(decode=True).decode()
    assert f"EMAIL;TYPE=work:{SELLER_ALIAS}" in vcard

    attached = parts["message/rfc822"].get_payload(0)
    assert attached["From"] == f"Jane Buyer <{BUYER_ALIAS}>"
    assert attached["To"] == f"Acme Shop <{SELLER_ALIAS}>"
    assert SELLER_ALIAS in decoded(attached["Cc"])
    assert attached["Received"] is None and attached["Autocrypt"] is None
    assert f"Hi {SELLER_ALIAS}," in attached.get_payload()

    pdf = parts["application/pdf"]
    assert pdf.get_filename() == f"invoice-{SELLER_ALIAS}.pdf"
    assert pdf["Content-Description"] == f"Invoice for {BUYER_ALIAS}"
    assert pdf.get_payload(decode=True) == PDF
    assert parts["application/octet-stream"].get_filename() == f"label-{SELLER_ALIAS}.bin"

    assert decoded(msg["Subject"]) == f"Order 302-4418760 – questions to {SELLER_ALIAS}"


@pytest.mark.parametrize("spelling", [
    "shop@seller.example", "SHOP@Seller.Example", "shop&#64;seller.example",
    "shop&#064seller.example", "shop&#x40;seller.example", "shop&#X40;seller&#46;example",
    "shop&commat;seller&period;example", "mailto:shop%40seller.example",
    "&#115;&#104;&#111;&#112;&#64;&#115;&#101;&#108;&#108;&#101;&#114;.example",
])
def test_every_spelling_of_an_address_in_html_is_replaced(spelling: str) -> None:
    raw = crlf(f"Content-Type: text/html; charset=utf-8\n\n<p><a href=x>{spelling}</a></p>\n")
    out = run(raw)
    assert SELLER_ALIAS.encode() in out
    assert_absent(out, SELLER_ADDRS)


def test_database_display_name_holding_an_address_is_replaced_too() -> None:
    out = run(crlf("Subject: x\n\nhi\n"), from_name="shop@seller.example")
    assert parse(out)["From"] == f'"{SELLER_ALIAS}" <{SELLER_ALIAS}>'


def test_headers_are_rebuilt_from_the_allow_list() -> None:
    out = run(planted_message(), in_reply_to="<p1@relay.example>",
              references=("<p0@relay.example>", "<p1@relay.example>"))
    names = header_names(out)
    assert names == ["From", "To", "Reply-To", "Message-ID", "In-Reply-To", "References",
                     "Date", "Subject", "MIME-Version", "Content-Type"]
    block = header_block(out).lower()
    for gone in (b"received", b"x-originating-ip", b"authentication-results", b"dkim-signature",
                 b"arc-seal", b"autocrypt", b"disposition-notification-to", b"return-receipt-to",
                 b"sender", b"cc:", b"bcc", b"x-mailer", b"return-path", b"203.0.113.7"):
        assert gone not in block
    msg = parse(out)
    assert msg["From"] == f"Acme Shop <{SELLER_ALIAS}>"
    assert msg["Reply-To"] == msg["From"]
    assert msg["To"] == f"Jane Buyer <{BUYER}>"
    assert msg["Message-ID"] == "<r1a2b3@relay.example>"
    assert msg["Date"] == "Mon, 01 Dec 2025 09:15:00 +0000"  # in UTC: no sender offset
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_boundary() == "outer-b"


def test_mime_headers_of_a_single_part_message_pass() -> None:
    raw = crlf("""From: shop@seller.example
Subject: hi
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit
Content-Language: de-DE
Content-Disposition: inline
Content-ID: <c1@seller.example>
X-Spam: no

hi
""")
    out = run(raw, extra_headers=(("List-Unsubscribe", "<mailto:u+t@relay.example>"),))
    assert header_names(out)[-5:] == ["Content-Type", "Content-Transfer-Encoding",
                                      "Content-Language", "Content-Disposition",
                                      "List-Unsubscribe"]
    msg = parse(out)
    assert msg["Content-Language"] == "de-DE"
    assert msg["List-Unsubscribe"] == "<mailto:u+t@relay.example>"
    assert msg["Content-ID"] is None and msg["X-Spam"] is None


def test_extra_header_may_not_replace_a_relay_header() -> None:
    raw = crlf("Subject: hi\n\nhi\n")
    with pytest.raises(ValueError):
        run(raw, extra_headers=(("From", "x@relay.example"),))
    with pytest.raises(ValueError):
        run(raw, extra_headers=(("Bad Name", "x"),))


# -- header injection ------------------------------------------------------------------

@pytest.mark.parametrize("evil", [
    "Evil\r\nBcc: x@y.example",
    "Evil\nBcc: x@y.example",
    "Evil\rBcc: x@y.example",
    "Evil\r\n\r\nbody injected",
    "Evil\x00\x0b\x0c\x1b\x7f\x85\u2028Bcc: x@y.example",
])
def test_display_name_cannot_inject_headers(evil: str) -> None:
    raw = crlf("Subject: hi\n\nhello\n")
    out = run(raw, from_name=evil, to_name=evil, in_reply_to="<a@b>\r\nBcc: z@y.example",
              references=("<c@d>\nX-Evil: 1",),
              extra_headers=(("List-Id", "x\r\nBcc: w@y.example"),))
    head, body = out.split(b"\r\n\r\n", 1)
    assert body == b"hello\r\n"
    assert not re.search(rb"^(Bcc|X-Evil|body)", head, re.M | re.I)
    assert all(line.startswith((b" ", b"\t")) or b":" in line for line in head.split(b"\r\n"))
    assert b"\x00" not in out and b"\x0b" not in out and b"\x1b" not in out
    assert b"\n" not in out.replace(b"\r\n", b"")
    msg = parse(out)
    assert msg.get_all("Bcc") is None and msg.get_all("X-Evil") is None
    assert len(msg.get_all("From")) == 1
    assert "Evil" in decoded(msg["From"])


_printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)


@settings(max_examples=200, deadline=None)
@given(name=_printable, subject=_printable)
def test_any_display_name_or_subject_is_one_header(name: str, subject: str) -> None:
    raw = b"Subject: " + subject.encode("utf-8") + b"\r\n\r\nhi\r\n"
    out = run(raw, from_name=name)
    head = header_block(out)
    assert header_names(out) == ["From", "To", "Reply-To", "Message-ID", "Date", "Subject",
                                 "MIME-Version"]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert head.isascii()


# -- non-ASCII, threading, date --------------------------------------------------------

def test_non_ascii_subject_and_names_round_trip() -> None:
    subject = "Grüße aus Köln – Ihre Bestellung 日本語 " + "ä" * 60
    raw = (f"Subject: {make_header([(subject.encode(), 'utf-8')]).encode()}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n").encode()
    out = run(raw, from_name="Müller & Söhne GmbH", to_name="Zoë Ærøskøbing-Łódź")
    assert header_block(out).isascii()
    assert all(len(line) <= 78 for line in header_block(out).split(b"\r\n"))
    msg = parse(out)
    assert decoded(msg["Subject"]) == subject
    assert decoded(msg["From"]) == f"Müller & Söhne GmbH <{SELLER_ALIAS}>"
    assert decoded(msg["To"]) == f"Zoë Ærøskøbing-Łódź <{BUYER}>"
    modern = BytesParser(policy=email_policy.default).parsebytes(out)
    assert modern["From"].addresses[0].display_name == "Müller & Söhne GmbH"
    assert modern["From"].addresses[0].addr_spec == SELLER_ALIAS
    assert str(modern["Subject"]) == subject


def test_raw_8bit_subject_is_decoded_and_reencoded() -> None:
    raw = "Subject: Grüße shop@seller.example\r\n\r\nhi\r\n".encode()
    out = run(raw)
    assert header_block(out).isascii()
    assert decoded(parse(out)["Subject"]) == f"Grüße {SELLER_ALIAS}"


def test_threading_headers_come_from_the_plan() -> None:
    raw = crlf("""Message-ID: <orig@seller.example>
In-Reply-To: <orig-parent@mail.example>
References: <a@mail.example> <orig-parent@mail.example>
Subject: Re: parcel

ok
""")
    refs = tuple(f"<ref{i}.{'x' * 20}@relay.example>" for i in range(6))
    out = run(raw, in_reply_to="<ref5@relay.example>", references=refs)
    msg = parse(out)
    assert msg["Message-ID"] == "<r1a2b3@relay.example>"
    assert msg["In-Reply-To"] == "<ref5@relay.example>"
    assert msg["References"].split() == list(refs)
    assert b"orig" not in out and b"<a@mail.example>" not in out
    assert all(len(line) <= 78 for line in header_block(out).split(b"\r\n"))

    bare = parse(run(raw, in_reply_to=None, references=()))
    assert bare["In-Reply-To"] is None and bare["References"] is None


def test_unparseable_date_becomes_now() -> None:
    out = run(crlf("Date: yesterday-ish\nSubject: x\n\nhi\n"))
    assert re.fullmatch(r"\w{3}, \d\d \w{3} 20\d\d \d\d:\d\d:\d\d [+-]\d{4}", parse(out)["Date"])
    missing = parse(run(crlf("Subject: x\n\nhi\n")))
    assert missing["Date"] is not None


# -- untouched parts -------------------------------------------------------------------

def _section(raw: bytes, start: bytes, boundary: bytes) -> bytes:
    begin = raw.index(start)
    return raw[begin:raw.index(b"\r\n--" + boundary, begin)]


def test_parts_without_addresses_are_byte_identical() -> None:
    raw = planted_message()
    out = run(raw)
    for start in (b"Content-Type: application/pdf", b"Content-Type: image/png",
                  b"Content-Type: text/plain; charset=us-ascii"):
        section = _section(raw, start, b"outer-b")
        if start.endswith(b"pdf"):  # the PDF part's headers carry addresses; its body does not
            section = section.split(b"\r\n\r\n", 1)[1]
        assert section in out


def test_pdf_attachment_decodes_to_identical_bytes() -> None:
    out = run(planted_message())
    pdfs = [p for p in parse(out).walk() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1 and pdfs[0].get_payload(decode=True) == PDF
    pngs = [p for p in parse(out).walk() if p.get_content_type() == "image/png"]
    assert pngs[0].get_payload(decode=True) == PNG


def test_mime_structure_is_preserved() -> None:
    raw = planted_message()
    tree = [p.get_content_type() for p in parse(raw).walk()]
    assert [p.get_content_type() for p in parse(run(raw)).walk()] == tree


def test_message_without_any_address_keeps_its_body() -> None:
    # Trace headers of the attached message are dropped even without addresses: take them out.
    raw = re.sub(rb"\r\n(Received|Autocrypt): [^\r]*(?=\r\nAutocrypt|\r\nFrom: Jane)", b"",
                 planted_message())
    assert raw.count(b"Received:") == 1 and raw.count(b"Autocrypt:") == 1
    out = run(raw, replacements={})
    assert out.split(b"\r\n\r\n", 1)[1] == raw.split(b"\r\n\r\n", 1)[1]


def test_input_message_is_not_modified() -> None:
    msg = parse(planted_message())
    before = msg.as_bytes()
    rewrite(msg, plan())
    assert msg.as_bytes() == before


# -- encodings and charsets ------------------------------------------------------------

def test_latin1_part_keeps_its_charset() -> None:
    body = "Grüße, schreiben Sie an shop@seller.example\n".encode("iso-8859-1")
    raw = crlf("Content-Type: text/plain; charset=iso-8859-1\n"
               "Content-Transfer-Encoding: 8bit\n\n") + body
    out = run(raw)
    msg = parse(out)
    assert msg.get_content_charset() == "iso-8859-1"
    text = msg.get_payload(decode=True).decode("iso-8859-1")
    assert text == f"Grüße, schreiben Sie an {SELLER_ALIAS}\r\n"


def test_charset_falls_back_to_utf8_when_alias_does_not_fit() -> None:
    raw = crlf("Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n"
               "mail shop@seller.example\n")
    out = run(raw, replacements={SELLER: "jürgen@relay.example"})
    msg = parse(out)
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_payload(decode=True).decode("utf-8") == "mail jürgen@relay.example\r\n"


def test_utf16_part_is_decoded_and_reencoded() -> None:
    body = base64.encodebytes("Reply to shop@seller.example\r\n".encode("utf-16")).decode()
    raw = crlf(f"Content-Type: text/plain; charset=utf-16\nContent-Transfer-Encoding: base64\n\n"
               f"{body}")
    msg = parse(run(raw))
    assert msg.get_payload(decode=True).decode("utf-16") == f"Reply to {SELLER_ALIAS}\r\n"


def test_alias_making_a_line_too_long_switches_7bit_to_quoted_printable() -> None:
    raw = crlf("Content-Type: text/plain\n\n" + "x" * 990 + "shop@seller.example\n")
    out = run(raw)
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    msg = parse(out)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_payload(decode=True) == b"x" * 990 + SELLER_ALIAS.encode() + b"\r\n"


def test_bare_lf_input_gives_crlf_output() -> None:
    raw = b"Subject: x\nContent-Type: text/plain\n\nline one shop@seller.example\nline two\n"
    out = run(raw)
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert out.endswith(f"line one {SELLER_ALIAS}\r\nline two\r\n".encode())


def test_rfc2047_address_in_part_header_is_replaced() -> None:
    raw = crlf("""Content-Type: multipart/mixed; boundary=b

--b
Content-Type: application/zip; name="=?utf-8?b?c2hvcEBzZWxsZXIuZXhhbXBsZS56aXA=?="
Content-Description: =?utf-8?q?f=C3=BCr_jane=2Ebuyer=40mail=2Eexample?=
Content-Transfer-Encoding: base64

UEsDBA==
--b--
""")
    out = run(raw)
    part = parse(out).get_payload(0)
    assert decoded(part["Content-Description"]) == f"für {BUYER_ALIAS}"
    assert part.get_filename() == f"{SELLER_ALIAS}.zip"
    assert_absent(out, (*SELLER_ADDRS, BUYER))


def test_delivery_status_fields_are_replaced() -> None:
    raw = crlf("""Content-Type: multipart/report; report-type=delivery-status; boundary=r

--r
Content-Type: text/plain

Your message to jane.buyer@mail.example could not be delivered.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.seller.example

Final-Recipient: rfc822; jane.buyer@mail.example
Action: failed
Status: 5.1.1

--r--
""")
    out = run(raw)
    assert BUYER.encode() not in out.split(b"\r\n\r\n", 1)[1]
    assert f"rfc822; {BUYER_ALIAS}".encode() in out
    assert [p.get_content_type() for p in parse(out).walk()][:3] == [
        "multipart/report", "text/plain", "message/delivery-status"]


def test_textual_octet_stream_attachment_is_rewritten_but_binary_is_not() -> None:
    binary = b"\x00\x01shop@seller.example\x02"
    csv_data = b"name,email\r\nAcme,shop@seller.example\r\n"
    raw = crlf(f"""Content-Type: multipart/mixed; boundary=b

--b
Content-Type: application/octet-stream; name="contacts.csv"
Content-Transfer-Encoding: base64

{b64(csv_data)}
--b
Content-Type: application/octet-stream; name="blob.bin"
Content-Transfer-Encoding: base64

{b64(binary)}
--b--
""")
    msg = parse(run(raw))
    csv, blob = msg.get_payload()
    assert csv.get_payload(decode=True) == f"name,email\r\nAcme,{SELLER_ALIAS}\r\n".encode()
    assert blob.get_payload(decode=True) == binary  # binary content is not ours to edit


# -- malformed input -------------------------------------------------------------------

MALFORMED = {
    "unknown charset": """Content-Type: text/plain; charset=x-no-such-charset
Content-Transfer-Encoding: 8bit

Mail shop@seller.example \xff\xfe now
""",
    "invalid base64 that is really plain text": """Content-Type: text/plain
Content-Transfer-Encoding: base64

This is not base64!!! mail shop@seller.example now
""",
    "base64 with bad padding": f"""Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

{base64.b64encode(b"<p>shop@seller.example</p>").decode()[:-3]}
""",
    "missing boundary": """Content-Type: multipart/mixed

--zzz
Content-Type: text/plain

shop@seller.example
--zzz--
""",
    "missing start boundary": """Content-Type: multipart/mixed; boundary=abc

no boundary ever appears: shop@seller.example
""",
    "missing close boundary": """Content-Type: multipart/mixed; boundary=abc

--abc
Content-Type: text/plain

unterminated shop@seller.example
""",
    "undecodable utf-8": """Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

bad =C3=28 bytes and SHOP=40SELLER.EXAMPLE
""",
    "unknown transfer encoding": """Content-Type: text/plain
Content-Transfer-Encoding: x-unheard-of

Write to shop@seller.example
""",
    "garbage content type": """Content-Type: ;;;=
Subject: =?bogus?x?abc?= =?utf-8?b?!!!?= shop@seller.example
Date: Mon, 99 Foo 20252 99:99:99 +9999

shop@seller.example
""",
    "header without colon and 8-bit header": """From shop@seller.example Mon Dec  1 10:00:00 2025
Subject: Gr\xfc\xdfe shop@seller.example
Broken header line
Content-Type: text/plain; name="n\xe4me shop@seller.example.txt"

body shop@seller.example
""",
    "empty body": "Subject: shop@seller.example\n",
    "nothing at all": "",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_does_not_raise_or_leak(name: str) -> None:
    raw = MALFORMED[name].replace("\n", "\r\n").encode("latin-1")
    out = run(raw)
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert_absent(out, SELLER_ADDRS)
    if name not in ("empty body", "nothing at all"):
        assert SELLER_ALIAS.encode() in out


def test_nesting_as_deep_as_the_parser_accepts_is_handled() -> None:
    inner = "Content-Type: text/plain\n\nshop@seller.example\n"
    for _ in range(600):  # far deeper than recursion would allow
        inner = f"Content-Type: message/rfc822\n\nFrom: shop@seller.example\n{inner}"
    out = run(crlf(inner))
    assert SELLER.encode() not in out.lower()
    assert out.count(SELLER_ALIAS.encode()) == 601 + 2  # + From and Reply-To


def test_base64_encoded_attached_message_is_rewritten() -> None:
    attached = crlf("From: Acme <shop@seller.example>\nReceived: from x\n\n"
                    "hi shop@seller.example\n")
    raw = crlf(f"""Content-Type: multipart/mixed; boundary=b

--b
Content-Type: message/rfc822
Content-Transfer-Encoding: base64

{b64(attached)}
--b--
""")
    out = run(raw)
    part = parse(out).get_payload(0)
    assert part["Content-Transfer-Encoding"] == "base64"
    body = base64.b64decode(part.get_payload(0).get_payload())
    assert body == crlf(f"From: Acme <{SELLER_ALIAS}>\n\nhi {SELLER_ALIAS}\n")
