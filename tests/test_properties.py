"""Property tests (hypothesis) of the three privacy and robustness promises.

1. A real address of either party, placed anywhere (any letter case, any transfer
   encoding, HTML entities, quoted replies, attachment names, encoded-words, attached
   messages), never survives the rewrite; the recipient's own address appears only in To.
2. Any MIME structure, however broken, goes through the pipeline without an exception:
   it is delivered or refused, and what is delivered parses.
3. Header values the relay writes (display names from the database, threading ids, the
   subject, extra headers) cannot add a header or a line, whatever CR, LF, NUL or folding
   they hold: the relay writes the header block itself (CVE-2025-11468, CVE-2026-1299).

Examples are bounded so the suite stays fast; `scripts/fuzz-rewrite` runs longer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import quopri
import re
import subprocess
import sys
import urllib.parse
from email import policy as email_policy
from email.parser import BytesParser
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aliasdb import Store
from relay import config as relay_config
from relay import wire
from relay.app import build_pipeline
from relay.delivery import chunks_of
from relay.parsing import parse
from relay.rewrite import RewritePlan, rewrite
from tests.conftest import BUYER_ADDR, ORDER, SELLER_ADDR, SELLER_INBOX, seed
from tests.smtp_harness import REPO
from tests.test_rewrite import decoded

SELLER_ALIAS = "k3x9m2p7q4w8e5r6t1y0@relay.example"
BUYER_ALIAS = "b8n5v1c6z0a2s3d4f5g6@relay.example"
REAL = (SELLER_ADDR, SELLER_INBOX, BUYER_ADDR)
REPLACEMENTS = {SELLER_ADDR: SELLER_ALIAS, SELLER_INBOX: SELLER_ALIAS, BUYER_ADDR: BUYER_ALIAS}
TOP = ["From", "To", "Reply-To", "Message-ID", "In-Reply-To", "References", "Date",
       "Subject", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
       "Content-Language", "Content-Disposition"]

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def plan(**changes) -> RewritePlan:
    fields = dict(from_name="Hollow Oak Woodcraft", from_addr=SELLER_ALIAS,
                  to_name="Jane Buyer", to_addr=BUYER_ADDR,
                  message_id="<r1a2b3@relay.example>", in_reply_to=None, references=(),
                  replacements=REPLACEMENTS)
    fields.update(changes)
    return RewritePlan(**fields)


def visible_texts(out: bytes):
    """Every way a reader may see the output, the top-level To header (the recipient's
    own address) left out: raw, and each part's decoded headers, file name and body."""
    yield re.sub(r"^To: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", "", out.decode("latin-1"),
                 count=1, flags=re.M)
    top = BytesParser(policy=email_policy.compat32).parsebytes(out)
    for part in top.walk():
        for name, value in part.items():
            if not (part is top and name.lower() == "to"):
                yield f"{name}: {decoded(value)}"
        with contextlib.suppress(Exception):
            yield decoded(part.get_filename() or "")
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            charset = part.get_content_charset() or "utf-8"
            try:
                text = payload.decode(charset, "replace")
            except LookupError:
                text = payload.decode("latin-1")
            yield text
            yield html.unescape(text)
            yield urllib.parse.unquote(html.unescape(text))


def assert_no_real_address(out: bytes) -> None:
    for text in visible_texts(out):
        low = text.lower()
        for addr in REAL:
            assert addr not in low, f"{addr} leaked: {text[:300]!r}"


# -- 1. addresses never survive the rewrite -------------------------------------------

_filler = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF,
                                blacklist_characters="=?<>&%\\\""), max_size=30)


@st.composite
def spelled(draw, address: str, html_ok: bool, url_ok: bool) -> str:
    """`address` with letters in random case and characters maybe as HTML entities or
    %-escapes, of either case."""
    out = []
    for ch in address:
        forms = [ch.upper() if draw(st.booleans()) else ch]
        ch = forms[0]
        if html_ok:
            forms += [f"&#{ord(ch)};", f"&#x{ord(ch):x};", f"&#X{ord(ch):X};", f"&#00{ord(ch)}"]
            forms += {"@": ["&commat;"], ".": ["&period;"]}.get(ch, [])
        if url_ok:
            forms += [f"%{ord(ch):02X}", f"%{ord(ch):02x}"]
        out.append(draw(st.sampled_from(forms)) if draw(st.integers(0, 3)) == 0 else forms[0])
    return "".join(out)


def _encode_body(text: str, cte: str, charset: str) -> tuple[str, str]:
    data = text.encode(charset, "replace")
    if cte == "base64":
        return base64.encodebytes(data).decode("ascii"), cte
    if cte == "quoted-printable":
        return quopri.encodestring(data).decode("ascii"), cte
    if cte == "8bit":
        return data.decode(charset), cte
    return text.encode("ascii", "replace").decode("ascii"), "7bit"


@st.composite
def placement(draw) -> tuple[str, str]:
    """One MIME part (headers, body) holding a real address; or a Subject value."""
    address = draw(st.sampled_from(REAL))
    kind = draw(st.sampled_from(["plain", "quoted", "html", "filename", "rfc2231",
                                 "ew-filename", "attached", "part-header"]))
    before, after = draw(_filler), draw(_filler)
    cte = draw(st.sampled_from(["7bit", "8bit", "base64", "quoted-printable"]))
    charset = draw(st.sampled_from(["utf-8", "iso-8859-1"]))
    if kind in ("plain", "quoted"):
        addr = draw(spelled(address, html_ok=False, url_ok=False))
        text = f"{before} {addr} {after}\n"
        if kind == "quoted":
            text = f"Thanks!\n\nOn Mon, Jane wrote:\n> {before}\n> <{addr}> {after}\n"
        body, cte = _encode_body(text, cte, charset)
        return f"Content-Type: text/plain; charset={charset}\r\n" \
               f"Content-Transfer-Encoding: {cte}\r\n", body
    if kind == "html":
        addr = draw(spelled(address, html_ok=True, url_ok=False))
        href = draw(spelled(address, html_ok=True, url_ok=True))
        text = f'<p>{html.escape(before)} <a href="mailto:{href}">{addr}</a> x</p>\n'
        body, cte = _encode_body(text, cte, charset)
        return f"Content-Type: text/html; charset={charset}\r\n" \
               f"Content-Transfer-Encoding: {cte}\r\n", body
    if kind == "filename":
        name = draw(spelled(address, html_ok=False, url_ok=False))
        return ("Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
                f'Content-Disposition: attachment; filename="{name}.pdf"\r\n',
                base64.encodebytes(b"%PDF-1.4 x").decode())
    if kind == "rfc2231":
        name = urllib.parse.quote(f"für {address}.txt")
        return ("Content-Type: application/octet-stream\r\n"
                f"Content-Disposition: attachment; filename*=utf-8''{name}\r\n", "data\r\n")
    if kind == "ew-filename":
        word = base64.b64encode(f"Rechnung {address}.pdf".encode()).decode()
        return (f'Content-Type: application/pdf; name="=?utf-8?b?{word}?="\r\n'
                "Content-Transfer-Encoding: base64\r\n",
                base64.encodebytes(b"%PDF-1.4 y").decode())
    if kind == "attached":
        addr = draw(spelled(address, html_ok=False, url_ok=False))
        return ("Content-Type: message/rfc822\r\n",
                f"From: Someone <{addr}>\r\nSubject: fwd\r\n\r\n{before} {addr}\r\n")
    addr = draw(spelled(address, html_ok=False, url_ok=False))
    return (f"Content-Type: text/plain\r\nContent-Description: from {addr}\r\n",
            f"{before}\r\n")


@st.composite
def subject(draw) -> str:
    address = draw(st.sampled_from(REAL))
    form = draw(st.sampled_from(["plain", "b", "q", "split"]))
    text = f"Order {ORDER} {draw(_filler)} {address}"
    if form == "plain":
        return text
    if form == "b":
        return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="
    if form == "q":
        return "=?utf-8?q?" + quopri.encodestring(text.encode(), header=True).decode() + "?="
    half = len(text) // 2  # one address across two encoded words
    return " ".join("=?utf-8?b?" + base64.b64encode(p.encode()).decode() + "?="
                    for p in (text[:half], text[half:]))


def _crlf(text: str) -> str:
    return re.sub(r"\r?\n", "\r\n", text)


@FAST
@given(parts=st.lists(placement(), min_size=1, max_size=4), subj=subject(),
       nested=st.booleans())
def test_real_addresses_never_survive_the_rewrite(parts, subj, nested):
    body = ""
    for headers, content in parts:
        body += f"--outer\r\n{headers}\r\n{_crlf(content)}\r\n"
    body += "--outer--\r\n"
    mixed = f'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n{body}'
    if nested:
        mixed = (f'Content-Type: multipart/alternative; boundary="wrap"\r\n\r\n'
                 f"--wrap\r\n{mixed}\r\n--wrap--\r\n")
    raw = (f"From: Owen <{SELLER_ADDR}>\r\nTo: {BUYER_ALIAS}\r\nSubject: {subj}\r\n"
           f"Reply-To: {SELLER_INBOX}\r\nMIME-Version: 1.0\r\n{mixed}")
    out = rewrite(parse(raw.encode("utf-8")), plan())
    assert_no_real_address(out)
    head = out.split(b"\r\n\r\n", 1)[0]
    assert head.lower().count(BUYER_ADDR.encode()) == 1  # the To header, nowhere else


@pytest.mark.parametrize("spelling", ["&#83;hop@seller.example", "mailto:SH%4FP@seller.example",
                                      "SHOP&#x40;SELLER&#x2E;&#x45;XAMPLE"])
def test_escapes_of_upper_case_letters_are_replaced(spelling):
    raw = (f"Content-Type: text/html\r\n\r\n<a href=\"{spelling}\">x</a>\r\n").encode()
    assert_no_real_address(rewrite(parse(raw), plan()))


# -- 2. random MIME through the whole pipeline ----------------------------------------

class Capture:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def deliver(self, mail_from: str, rcpt: str, data) -> None:
        self.sent.append(b"".join(chunks_of(data)))

    async def close(self) -> None:
        return None


DELIVERY_CHAIN = ["relay_control", "known_alias", "seller_status", "authorized_sender",
                  "order_reference"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The full policy chain (robustness), plus a short one that delivers most inputs."""
    home = tmp_path_factory.mktemp("properties")

    def config(order=None):
        policy = {"content_rules": str(REPO / "conf" / "content_rules.toml"),
                  "contact_reasons": str(REPO / "conf" / "contact_reasons.toml")}
        if order:
            policy["order"] = order
        return relay_config.load(None, overrides={
            "database": {"path": str(home / "relay.db")},
            "dkim": {"verify_inbound": "off", "key": str(home / "no-dkim.key")},
            "policy": policy})

    store = Store.open(config().database_path)
    store.ensure_secret()
    parties = seed(store)
    capture = Capture()
    full = build_pipeline(config(), store, capture)
    short = build_pipeline(config(DELIVERY_CHAIN), store, capture)
    for pipe in (full, short):
        pipe.parties, pipe.capture = parties, capture
    yield full, short
    store.close()


_ctypes = st.sampled_from(["text/plain", "text/html", "text/calendar", "application/pdf",
                           "application/octet-stream", "image/png", "message/rfc822",
                           "text/x-unknown", "application/json", "", "multipart/mixed",
                           "foo", "text/plain; charset=x-nonexistent"])
_ctes = st.sampled_from(["", "7bit", "8bit", "binary", "base64", "quoted-printable",
                         "x-uuencode", "BASE64 ", "bogus"])
_line = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF,
                              blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                max_size=60)


@st.composite
def mime_tree(draw, depth: int = 0) -> str:
    """A MIME entity, well-formed or not: odd types, encodings, boundaries, nesting."""
    if depth < 4 and draw(st.integers(0, 2)) == 0:
        boundary = draw(st.sampled_from(["b", "==x==", "a b", "", "\"q\"", "--", "b" * 80]))
        children = draw(st.lists(mime_tree(depth + 1), max_size=3))
        close = draw(st.sampled_from([f"--{boundary}--", f"--{boundary}", "", "--other--"]))
        parts = "".join(f"--{boundary}\r\n{child}\r\n" for child in children)
        quote = draw(st.booleans())
        param = f'"{boundary}"' if quote else boundary
        return (f"Content-Type: multipart/{draw(st.sampled_from(['mixed', 'alternative']))}"
                f"; boundary={param}\r\n\r\n{draw(_line)}\r\n{parts}{close}\r\n")
    ctype = draw(_ctypes)
    headers = f"Content-Type: {ctype}\r\n"
    if draw(st.booleans()):
        headers += f"Content-Transfer-Encoding: {draw(_ctes)}\r\n"
    if draw(st.booleans()):
        headers += (f'Content-Disposition: attachment; filename="{draw(_line)}"\r\n')
    if draw(st.booleans()):
        headers += f"X-Garbage: {draw(_line)}\r\n"
    lines = draw(st.lists(_line, max_size=6))
    if ctype.startswith("text/") or ctype in ("", "foo"):  # opaque files pass as they are
        lines.append(f"write to {SELLER_ADDR} or {BUYER_ADDR}")
    return headers + "\r\n" + "\r\n".join(lines) + "\r\n"


def run_pipeline(pipe, raw: bytes) -> str:
    """What the relay answers to this DATA: the handler's checks, then the pipeline."""
    problem = wire.data_problem(raw)
    if problem is not None:
        return problem
    reply, ctx = pipe.rcpt("props", SELLER_ADDR, pipe.parties.buyer_alias)
    assert reply.startswith("250"), reply
    outcome = asyncio.run(pipe.data("props", ctx, raw))  # must not raise
    return outcome.reply


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(tree=mime_tree(), subj=_line, extra=st.lists(_line, max_size=3))
def test_random_mime_is_delivered_parseable_or_refused(pipeline, tree, subj, extra):
    full, short = pipeline
    head = (f"From: Owen <{SELLER_ADDR}>\r\nTo: {short.parties.buyer_alias}\r\n"
            f"Subject: Order {ORDER} {subj}\r\nMIME-Version: 1.0\r\n"
            + "".join(f"X-Extra: {value}\r\n" for value in extra))
    raw = (head + tree).encode("utf-8", "surrogateescape")
    assume(max(map(len, raw.split(b"\r\n"))) <= 998)  # longer lines never reach DATA
    for pipe in (full, short):
        before = len(pipe.capture.sent)
        reply = run_pipeline(pipe, raw)
        code = int(reply[:3])
        assert code == 250 or 400 <= code < 600, reply
        if code != 250:
            assert len(pipe.capture.sent) == before
            continue
        [out] = pipe.capture.sent[before:]
        n = out.count(b"\r\n")
        assert out.count(b"\r") == n and out.count(b"\n") == n and b"\0" not in out
        head_out = out.split(b"\r\n\r\n", 1)[0]
        assert all(len(line) <= 998 for line in head_out.split(b"\r\n"))
        msg = BytesParser(policy=email_policy.default).parsebytes(out)
        assert msg["From"].addresses[0].addr_spec.endswith("@relay.example")
        for part in msg.walk():
            payload = part.get_payload(decode=True)
            if part.get_content_maintype() == "text" and isinstance(payload, bytes):
                text = payload.decode("utf-8", "replace").lower()
                assert SELLER_ADDR not in text and BUYER_ADDR not in text


def test_the_pipeline_property_can_deliver(pipeline):
    """Plain input is delivered by both chains, so the property above is not vacuous."""
    for pipe in pipeline:
        raw = (f"From: Owen <{SELLER_ADDR}>\r\nTo: {pipe.parties.buyer_alias}\r\n"
               f"Subject: Order {ORDER} shipped\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain\r\n\r\nyour parcel is on its way\r\n").encode()
        assert run_pipeline(pipe, raw).startswith("250")


# -- 3. no header injection -----------------------------------------------------------

_tricky = st.one_of(
    st.text(max_size=150),
    st.lists(st.sampled_from(["\r\n", "\n", "\r", "\x00", "\r\n ", "\r\n\t", "\u2028",
                              "\u0085", "Bcc: victim@elsewhere.example", "X-Evil: 1",
                              ": ", "=?utf-8?q?a=0D=0ABcc:_x@y.example?=", '"', "\\",
                              "<evil@elsewhere.example>", ",", ";", "(", ")", "x" * 120,
                              "ü", "日本", " ", "\t", "\r\n\r\n"]),
             max_size=12).map("".join),
)


@FAST
@given(from_name=_tricky, to_name=_tricky, subject_value=_tricky, msgid=_tricky,
       refs=st.lists(_tricky, max_size=3), extra=_tricky)
def test_header_values_never_make_an_extra_header(from_name, to_name, subject_value, msgid,
                                                   refs, extra):
    raw = ("Subject: " + subject_value.replace("\r", "").replace("\n", "\r\n ")
           + "\r\nContent-Type: text/plain\r\n\r\nhello\r\n").encode("utf-8", "replace")
    p = plan(from_name=from_name, to_name=to_name, in_reply_to=msgid or None,
             references=tuple(refs), extra_headers=(("List-Id", extra),))
    out = rewrite(parse(raw), p)
    head, body = out.split(b"\r\n\r\n", 1)
    assert body == b"hello\r\n"
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", head)  # no controls
    lines = head.split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b"")
    names = [line.split(b":", 1)[0].decode() for line in lines if line[:1] not in b" \t"]
    assert set(names) <= {*TOP, "List-Id"}, names  # the allow-list and the extra header
    assert len(names) == len(set(names)), names  # each once: nothing injected or repeated
    assert {"From", "To", "Reply-To", "Message-ID", "Date", "Subject", "MIME-Version",
            "Content-Type", "List-Id"} <= set(names), names
    msg = parse(out)  # RFC 5322 structure, no RFC 2047 decoding
    assert [a for _, a in getaddresses(msg.get_all("From"))] == [SELLER_ALIAS]
    assert [a for _, a in getaddresses(msg.get_all("To"))] == [BUYER_ADDR]
    assert [a for _, a in getaddresses(msg.get_all("Reply-To"))] == [SELLER_ALIAS]
    modern = BytesParser(policy=email_policy.default).parsebytes(out)
    assert modern.keys() == msg.keys()
    assert modern.get_all("Bcc") is None and modern.get_all("X-Evil") is None


@pytest.mark.parametrize("name", ["=?utf-8?q?a=0D=0ABcc:_x@y.example?=", "=??Q?=00"])
def test_display_names_that_look_like_encoded_words_stay_literal(name):
    out = rewrite(parse(b"Subject: hi\r\n\r\nhello\r\n"), plan(from_name=name))
    modern = BytesParser(policy=email_policy.default).parsebytes(out)
    [mailbox] = modern["From"].addresses
    assert (mailbox.display_name, mailbox.addr_spec) == (name, SELLER_ALIAS)


# -- the fuzz target runs -------------------------------------------------------------

def test_fuzz_target_runs_with_a_time_budget():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "fuzz-rewrite"),
                             "--seconds", "60", "--inputs", "300", "--seed", "7"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.splitlines()[-1]
    assert re.search(r"\d+ inputs", summary) and "0 failures" in summary, summary
    assert re.search(r"\b300 inputs", summary), summary
