"""DKIM: keys, signing through `cryptography`, inbound verification. Offline throughout.

Signatures are checked with dkimpy's own verifier against records served by a table. dkimpy
verifies Ed25519 only through PyNaCl, which the relay does not install; for that one case
the tests give dkimpy a PyNaCl-shaped shim over `cryptography`, so dkimpy's own
canonicalization and hashing code still decides.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from email.header import Header
from pathlib import Path
from types import SimpleNamespace

import dkim
import dns.resolver
import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import config as relay_config
from relay.cli import dkim as dkim_cli
from relay.cli.common import RelayGroup
from relay.dkim import (
    DkimKeyError,
    DnsResolver,
    DnsTempError,
    Signer,
    SigningError,
    SigningKey,
    TableResolver,
    aligned,
    ensure_key,
    generate_ed25519_pem,
    generate_rsa_pem,
    load_private_key,
    organizational_domain,
    public_key_value,
    verify_inbound,
)
from relay.dkim_sign import signed_header_names
from tests.smtp_harness import write_config

T0 = 1_700_000_000  # a fixed signing time (t=), in the past so verifiers accept it


# -- keys and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    return generate_rsa_pem()


@pytest.fixture(scope="module")
def rsa_key(rsa_pem) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(rsa_pem, password=None)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return serialization.load_pem_private_key(generate_ed25519_pem(), password=None)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(generate_rsa_pem(), password=None)


def table_for(*signers: Signer) -> TableResolver:
    """The TXT records the signers' domains would publish."""
    table = TableResolver()
    for signer in signers:
        for key in signer.keys:
            table.add(f"{key.selector}._domainkey.{signer.domain}", public_key_value(key.key))
    return table


def dnsfunc(resolver: TableResolver):
    """dkimpy's dnsfunc, written independently of relay.dkim_verify's adapter."""
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        records = resolver.txt(name.decode())
        return records[0] if records else None
    return lookup


def fields(message: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature, topmost first."""
    headers, _ = dkim.rfc822_parse(message)
    return [dkim.util.parse_tag_value(v) for n, v in headers if n.lower() == b"dkim-signature"]


def dkimpy_verifies_all(message: bytes, resolver: TableResolver) -> list[bool]:
    """dkimpy's own verifier on every signature of ``message``."""
    return [dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc(resolver))
            for i in range(len(fields(message)))]


# dkimpy's Ed25519 path calls PyNaCl (nacl.signing.VerifyKey, nacl.exceptions.*);
# this provides that API over cryptography for dkimpy's verifier, in tests only.
class _BadSignatureError(Exception):
    pass


class _VerifyKey:
    def __init__(self, key: bytes, encoder=None) -> None:
        self.key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(key))

    def verify(self, smessage: bytes, signature: bytes) -> bytes:
        try:
            self.key.verify(signature, smessage)
        except InvalidSignature:
            raise _BadSignatureError() from None
        return smessage


NACL_SHIM = SimpleNamespace(
    signing=SimpleNamespace(VerifyKey=_VerifyKey),
    encoding=SimpleNamespace(Base64Encoder=object()),
    exceptions=SimpleNamespace(BadSignatureError=_BadSignatureError, ValueError=ValueError),
)


@pytest.fixture
def dkimpy_ed25519(monkeypatch):
    try:
        import nacl.signing  # noqa: F401 - the real thing, when installed
    except ImportError:
        monkeypatch.setattr(dkim, "nacl", NACL_SHIM, raising=False)


# -- messages ----------------------------------------------------------------------------


def relay_message(eol: bytes = b"\r\n", *, raw_utf8: bool = False, body: bytes | None = None,
                  from_domain: str = "relay.example") -> bytes:
    """A message as the relay builds it: encoded-word headers, folding, long lines."""
    subject = Header("[Important] Größe ändern – Bestellung 302-4418760-1193825 ✓ " * 2,
                     "utf-8").encode(linesep="\n")
    subject_bytes = subject.encode("ascii")
    if raw_utf8:  # SMTPUTF8: 8-bit header, no encoded words
        subject_bytes = "Größe ändern ✓ – 注文".encode()
    headers = [
        b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller_GmbH?= <k3v7abcdefgh2345mnop@"
        + from_domain.encode() + b">",
        b"To: =?utf-8?b?w4lsb2RpZQ==?= <jane.buyer@mail.example>",
        b"Reply-To: k3v7abcdefgh2345mnop@" + from_domain.encode(),
        b"Subject: " + subject_bytes,
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000",
        b"Message-ID: <4f1c2d3e4f5a6b7c8d9e0f1a@relay.example>",
        b"In-Reply-To: <a1@relay.example>",
        b"References: <a0@relay.example>\n <a1@relay.example>",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=\"utf-8\"",
        b"Content-Transfer-Encoding: 8bit",
        b"X-Mailer-Unsigned: anything",
    ]
    if body is None:
        body = b"\n".join([
            "Grüße aus Köln,".encode(),
            b"",
            b"a very long line " + b"0123456789" * 200,  # 2000+ octets, no folding
            b"trailing blanks   \t",
            b"",
            b"",
        ])
    text = b"\n".join(headers) + b"\n\n" + body
    return text.replace(b"\n", eol)


MESSAGES = {
    "crlf": relay_message(b"\r\n"),
    "lf": relay_message(b"\n"),
    "crlf-8bit-headers": relay_message(b"\r\n", raw_utf8=True),
    "lf-8bit-headers": relay_message(b"\n", raw_utf8=True),
    "empty-body": relay_message(b"\r\n", body=b""),
}


# -- signing -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_rsa_signature_verifies_with_dkimpy(name, rsa_key):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key)])
    message = MESSAGES[name]
    signed = signer.sign(message) + message
    assert dkim.verify(signed, dnsfunc=dnsfunc(table_for(signer)))
    (tags,) = fields(signed)
    assert tags[b"a"] == b"rsa-sha256" and tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"relay.example" and tags[b"s"] == b"relay"
    signed_names = [h.strip() for h in tags[b"h"].split(b":")]
    assert signed_names.count(b"from") == 2  # oversigned: a second From breaks it
    assert b"x-mailer-unsigned" not in signed_names
    assert set(signed_names) == {b"from", b"to", b"reply-to", b"subject", b"date",
                                 b"message-id", b"in-reply-to", b"references",
                                 b"mime-version", b"content-type",
                                 b"content-transfer-encoding"}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_rsa_and_ed25519_signatures_verify_with_dkimpy(name, rsa_key, ed_key, dkimpy_ed25519):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key),
                                      SigningKey("relay-ed25519", ed_key)])
    message = MESSAGES[name]
    header = signer.sign(message)
    signed = header + message
    assert [t[b"a"] for t in fields(signed)] == [b"rsa-sha256", b"ed25519-sha256"]
    assert header.endswith(b"\r\n") and header.count(b"DKIM-Signature:") == 2
    assert dkimpy_verifies_all(signed, table_for(signer)) == [True, True]
    # and through the relay's own verifier (Ed25519 via cryptography, no shim involved)
    result = verify_inbound(signed, "relay.example", table_for(signer))
    assert result.result == "pass" and result.aligned, result.detail
    assert result.detail.count("pass") == 2


def test_ed25519_tampering_is_caught(rsa_key, ed_key, dkimpy_ed25519):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key),
                                      SigningKey("relay-ed25519", ed_key)])
    message = MESSAGES["crlf"]
    tampered = (signer.sign(message) + message).replace(b"Date: Tue", b"Date: Wed")
    assert dkimpy_verifies_all(tampered, table_for(signer)) == [False, False]
    result = verify_inbound(tampered, "relay.example", table_for(signer))
    assert result.result == "fail"


def test_lf_line_separator_for_lf_files(rsa_key):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key)])
    message = MESSAGES["lf"]
    header = signer.sign(message, linesep=b"\n")
    assert b"\r" not in header and header.endswith(b"\n")
    assert dkim.verify(header + message, dnsfunc=dnsfunc(table_for(signer)))


def test_cryptography_path_matches_dkimpy_byte_for_byte(rsa_pem, rsa_key, monkeypatch):
    """RSA PKCS#1 v1.5 is deterministic: same input, key and t= give the same header."""
    signer = Signer("relay.example", [SigningKey("relay", rsa_key)])
    resolver = table_for(signer)
    for message in MESSAGES.values():
        ours = signer.sign(message, timestamp=T0)
        include = signed_header_names(dkim.rfc822_parse(message)[0])
        with monkeypatch.context() as patch:  # dkimpy reads t= from time.time()
            patch.setattr(dkim, "time", SimpleNamespace(time=lambda: T0))
            pure = dkim.sign(message, b"relay", b"relay.example", rsa_pem,
                             canonicalize=(b"relaxed", b"relaxed"), include_headers=include)
        assert ours == pure
        assert dkim.verify(ours + message, dnsfunc=dnsfunc(resolver))
        assert dkim.verify(pure + message, dnsfunc=dnsfunc(resolver))


def test_signing_is_much_faster_than_pure_dkimpy(rsa_pem, rsa_key):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key)])
    message = MESSAGES["crlf"]
    include = signed_header_names(dkim.rfc822_parse(message)[0])

    def pure() -> None:
        dkim.sign(message, b"relay", b"relay.example", rsa_pem,
                  canonicalize=(b"relaxed", b"relaxed"), include_headers=include)

    def ours() -> None:
        signer.sign(message)

    def best_of_three(fn) -> float:
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(20):
                fn()
            runs.append(time.perf_counter() - started)
        return min(runs)

    pure_time, our_time = best_of_three(pure), best_of_three(ours)
    assert pure_time >= 3 * our_time, (pure_time, our_time)


def test_signer_is_thread_safe(rsa_key, ed_key):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key),
                                      SigningKey("relay-ed25519", ed_key)])
    resolver = table_for(signer)
    messages = [relay_message(body=f"message {i}\n".encode()) for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        headers = list(pool.map(signer.sign, messages))
    for header, message in zip(headers, messages, strict=True):
        assert verify_inbound(header + message, "relay.example", resolver).detail.count(
            "pass") == 2


def test_sign_refuses_a_message_without_from(rsa_key):
    signer = Signer("relay.example", [SigningKey("relay", rsa_key)])
    with pytest.raises(SigningError):
        signer.sign(b"To: a@b.example\r\nSubject: x\r\n\r\nbody\r\n")
    with pytest.raises(SigningError):
        signer.sign(b"\x00\x01 not a header\r\n\r\n")
    with pytest.raises(SigningError):
        signer.sign(b" continuation first\r\nFrom: a@b.example\r\n\r\n")


# -- keys and config ---------------------------------------------------------------------


def load_config(tmp_path: Path, **dkim_section) -> relay_config.Config:
    return relay_config.load(write_config(tmp_path, dkim={"key": "keys/dkim.key",
                                                          **dkim_section}))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_key_creates_a_0600_rsa_key_once(tmp_path):
    config = load_config(tmp_path)
    path = Path(config["dkim"]["key"])
    assert ensure_key(config) is True
    assert mode(path) == 0o600
    key = load_private_key(path)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    before = path.read_bytes()
    assert ensure_key(config) is False
    assert path.read_bytes() == before  # never replaced


def test_signer_from_config(tmp_path, dkimpy_ed25519):
    config = load_config(tmp_path, selector="s2024")
    assert Signer.from_config(config) is None  # no key yet
    ensure_key(config)
    signer = Signer.from_config(config)
    assert signer.domain == "relay.example" and signer.selectors == ("s2024",)
    Path(f"{config['dkim']['key']}.ed25519").write_bytes(generate_ed25519_pem())
    signer = Signer.from_config(config)
    assert signer.selectors == ("s2024", "s2024-ed25519")
    message = MESSAGES["crlf"]
    assert dkimpy_verifies_all(signer.sign(message) + message, table_for(signer)) == [True] * 2


def test_signer_from_config_refuses_a_bad_key(tmp_path):
    config = load_config(tmp_path)
    path = Path(config["dkim"]["key"])
    path.parent.mkdir()
    path.write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nnonsense\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(DkimKeyError, match="dkim.key"):
        Signer.from_config(config)
    path.write_bytes(generate_ed25519_pem())  # an Ed25519 key where RSA belongs
    with pytest.raises(DkimKeyError, match="RSA"):
        Signer.from_config(config)


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.config = write_config(tmp_path, dkim={"key": "keys/dkim.key", "selector": "sel1"})
        self.key = tmp_path / "keys" / "dkim.key"
        self.ed_key = tmp_path / "keys" / "dkim.key.ed25519"
        self.group = RelayGroup("relay")
        dkim_cli.register(self.group)
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        result = self.runner.invoke(self.group, ["dkim", *args, "--config", str(self.config)])
        if ok:
            assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        else:
            assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
            assert len(result.stderr.strip().splitlines()) == 1  # one-line error
        return result


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


def test_keygen_writes_0600_and_refuses_to_overwrite(cli):
    assert "created" in cli("keygen").stdout
    assert mode(cli.key) == 0o600
    first = cli.key.read_bytes()
    refused = cli("keygen", ok=False)
    assert "--force" in refused.stderr
    assert cli.key.read_bytes() == first
    replaced = cli("keygen", "--force")
    assert "replaced" in replaced.stdout and "warning" in replaced.stderr
    assert cli.key.read_bytes() != first and mode(cli.key) == 0o600
    assert isinstance(load_private_key(cli.key), rsa.RSAPrivateKey)


def test_keygen_ed25519(cli):
    out = cli("keygen", "--ed25519").stdout
    assert "sel1-ed25519" in out
    assert mode(cli.ed_key) == 0o600 and mode(cli.key) == 0o600  # RSA made as well
    assert isinstance(load_private_key(cli.ed_key), ed25519.Ed25519PrivateKey)
    rsa_before, ed_before = cli.key.read_bytes(), cli.ed_key.read_bytes()
    cli("keygen", "--ed25519", ok=False)
    cli("keygen", "--ed25519", "--force")
    assert cli.key.read_bytes() == rsa_before  # only the Ed25519 key was replaced
    assert cli.ed_key.read_bytes() != ed_before


ZONE_RECORD = re.compile(r'^(\S+)\. IN TXT \(?\s*((?:"[^"]*"\s*)+)', re.M)


def zone_records(text: str) -> dict[str, str]:
    return {name: "".join(re.findall(r'"([^"]*)"', strings))
            for name, strings in ZONE_RECORD.findall(text)}


def test_dns_prints_records_that_verify(cli, dkimpy_ed25519):
    cli("dns", ok=False)  # no key yet: one-line error
    cli("keygen", "--ed25519")
    out = cli("dns").stdout
    for line in out.splitlines():  # zone files: strings of at most 255 characters
        for string in re.findall(r'"([^"]*)"', line):
            assert len(string) <= 255
    records = zone_records(out)
    rsa_record = records["sel1._domainkey.relay.example"]
    assert rsa_record.startswith("v=DKIM1; k=rsa; p=")
    assert records["sel1-ed25519._domainkey.relay.example"].startswith("v=DKIM1; k=ed25519; p=")
    assert records["_dmarc.relay.example"].startswith("v=DMARC1; p=reject")
    assert records["relay.example"].startswith("v=spf1 ")
    assert "Suggestions" in out

    # p= is the public half of the key on disk: the printed records verify a signature
    public = serialization.load_der_public_key(base64.b64decode(rsa_record.split("p=")[1]))
    assert public.public_numbers() == load_private_key(cli.key).public_key().public_numbers()
    signer = Signer.from_config(relay_config.load(cli.config))
    message = MESSAGES["crlf"]
    signed = signer.sign(message) + message
    printed = TableResolver({name: value for name, value in records.items()
                             if "._domainkey." in name})
    assert dkimpy_verifies_all(signed, printed) == [True, True]

    data = json.loads(cli("dns", "--json").stdout)
    by_name = {r["name"]: r for r in data["dkim"]}
    assert by_name["sel1._domainkey.relay.example"]["value"] == rsa_record
    assert "".join(by_name["sel1._domainkey.relay.example"]["strings"]) == rsa_record
    assert {r["name"] for r in data["suggested"]} >= {"relay.example", "_dmarc.relay.example"}


def test_dns_reports_an_unusable_key_in_one_line(cli):
    cli.key.parent.mkdir()
    cli.key.write_bytes(b"not a key")
    assert "dkim.key" in cli("dns", ok=False).stderr


# -- inbound verification ----------------------------------------------------------------


@pytest.fixture(scope="module")
def seller(other_key) -> Signer:
    return Signer("seller.example", [SigningKey("mail2024", other_key)])


def seller_message(domain: str = "mail.seller.example", body: bytes = b"Hello\r\n") -> bytes:
    return (f"From: Shop <shop@{domain}>\r\nTo: abc@relay.example\r\nSubject: Your order\r\n"
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <m1@seller.example>\r\n"
            "\r\n").encode() + body


def test_verify_inbound_pass_aligned_with_subdomain(seller):
    message = seller_message()
    result = verify_inbound(seller.sign(message) + message, "mail.seller.example",
                            table_for(seller))
    assert result.result == "pass"
    assert result.domains == ("seller.example",)
    assert result.aligned
    assert "d=seller.example s=mail2024: pass" in result.detail


def test_verify_inbound_other_domain_is_not_aligned(rsa_key, seller):
    other = Signer("other.example", [SigningKey("sel", rsa_key)])
    message = seller_message()
    result = verify_inbound(other.sign(message) + message, "seller.example",
                            table_for(other))
    assert result.result == "pass" and result.domains == ("other.example",)
    assert not result.aligned
    # with the seller's own signature as well, the aligned one counts
    both = seller.sign(message) + other.sign(message) + message
    result = verify_inbound(both, "seller.example", table_for(seller, other))
    assert result.domains == ("seller.example", "other.example") and result.aligned


def test_verify_inbound_body_changed_after_signing(seller):
    message = seller_message()
    signed = seller.sign(message) + message
    changed = signed.replace(b"Hello", b"Hellp")
    result = verify_inbound(changed, "seller.example", table_for(seller))
    assert result.result == "fail" and not result.aligned and result.domains == ()
    assert "body hash mismatch" in result.detail


def test_verify_inbound_header_changed_after_signing(seller):
    message = seller_message()
    forged = (seller.sign(message) + message).replace(b"shop@mail.seller", b"boss@mail.seller")
    result = verify_inbound(forged, "seller.example", table_for(seller))
    assert result.result == "fail" and "signature did not verify" in result.detail


def test_verify_inbound_none_without_signature():
    result = verify_inbound(seller_message(), "seller.example", TableResolver())
    assert result == verify_inbound(seller_message(), "seller.example", TableResolver())
    assert result.result == "none" and not result.aligned and result.domains == ()


def test_verify_inbound_missing_key_record_fails(seller):
    message = seller_message()
    result = verify_inbound(seller.sign(message) + message, "seller.example", TableResolver())
    assert result.result == "fail" and "missing public key" in result.detail


def test_verify_inbound_dns_trouble_is_temperror(seller):
    message = seller_message()
    resolver = TableResolver(tempfail=["mail2024._domainkey.seller.example"])
    result = verify_inbound(seller.sign(message) + message, "seller.example", resolver)
    assert result.result == "temperror"


def test_verify_inbound_ed25519_only(ed_key):
    signer = Signer("seller.example", [SigningKey("ed", ed_key)])
    message = seller_message()
    signed = signer.sign(message) + message
    assert verify_inbound(signed, "seller.example", table_for(signer)).result == "pass"
    tampered = signed.replace(b"Hello", b"Bye")
    assert verify_inbound(tampered, "seller.example", table_for(signer)).result == "fail"
    # a record of the wrong key type fails cleanly
    wrong = TableResolver({"ed._domainkey.seller.example": "v=DKIM1; k=rsa; p=AAAA"})
    assert verify_inbound(signed, "seller.example", wrong).result == "fail"


def test_verify_inbound_refuses_content_past_l(other_key):
    pem = other_key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    message = seller_message()
    header = dkim.sign(message, b"mail2024", b"seller.example", pem, length=True,
                       canonicalize=(b"relaxed", b"relaxed"))
    resolver = TableResolver({"mail2024._domainkey.seller.example": public_key_value(other_key)})
    assert verify_inbound(header + message, "seller.example", resolver).result == "pass"
    appended = header + message + b"Pay to another account: ...\r\n"
    assert dkim.verify(appended, dnsfunc=dnsfunc(resolver))  # dkimpy alone lets it through
    result = verify_inbound(appended, "seller.example", resolver)
    assert result.result == "fail" and "l=" in result.detail


def test_verify_inbound_details_carry_no_addresses(seller):
    message = seller_message()
    signed = seller.sign(message) + message
    # an i= that is not within d= (dkimpy quotes it in its error text)
    forged = re.sub(rb"i=@seller\.example", b"i=jane.doe@evil.example", signed)
    result = verify_inbound(forged, "seller.example", table_for(seller))
    assert result.result == "fail" and "@" not in result.detail
    broken = b"DKIM-Signature: v=1; d=seller.example; jane.doe@mail.example\r\n" + message
    result = verify_inbound(broken, "seller.example", table_for(seller))
    assert result.result == "fail" and "jane.doe" not in result.detail


GARBAGE = [
    b"", b"\r\n", b"\x00\xff\xfe", b"no colon here\r\n\r\nbody", b" leading space\r\n",
    b"DKIM-Signature:\r\n\r\n", b"DKIM-Signature: v=1; a=rsa-sha256; b=!!!\r\n\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA\r\n\r\n",
    b"DKIM-Signature: v=1; a=ed25519-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA\r\n"
    b"From: a@x.example\r\n\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=\xff\xfe; s=\x00; h=from; bh=AA==; b=AA==\r\n\r\n",
    b"DKIM-Signature: v=1; v=1\r\n\r\n",
    b"DKIM-Signature: a=rsa-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA; l=99x\r\n\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA; "
    b"t=99999999999999999999\r\n\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=; bh=AAAA; b=AAAA\r\n\r\n",
]


@pytest.mark.parametrize("message", GARBAGE)
def test_verify_inbound_never_raises_on_garbage(message):
    resolver = TableResolver({"s._domainkey.x.example": ["v=DKIM1; k=rsa; p=!!", "junk"]})
    result = verify_inbound(message, "x.example", resolver)
    assert result.result in {"fail", "none"} and not result.aligned


def test_verify_inbound_never_raises_on_odd_types():
    for message in ("From: a@b.example\r\n\r\nx", None, 42):
        assert verify_inbound(message, "b.example", TableResolver()).result == "none"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from([b"", b"DKIM-Signature: ", b"From: x\r\n"]))
def test_verify_inbound_never_raises_fuzz(data, prefix):
    result = verify_inbound(prefix + data, "x.example", TableResolver())
    assert result.result in {"pass", "fail", "none", "temperror"}


def test_too_many_signatures_are_capped(seller):
    message = seller_message()
    sigs = b"".join(seller.sign(message, timestamp=T0 + i) for i in range(12))
    resolver = table_for(seller)
    result = verify_inbound(sigs + message, "seller.example", resolver)
    assert result.result == "pass" and "4 more signature(s) not checked" in result.detail
    assert resolver.queries == ["mail2024._domainkey.seller.example"]  # looked up once


# -- alignment ---------------------------------------------------------------------------


@pytest.mark.parametrize(("domain", "org"), [
    ("mail.seller.example", "seller.example"),
    ("seller.example", "seller.example"),
    ("A.B.Seller.Example.", "seller.example"),
    ("shop.example.co.uk", "example.co.uk"),
    ("co.uk", "co.uk"),
    ("", ""),
])
def test_organizational_domain(domain, org):
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(("from_domain", "dkim_domain", "expected"), [
    ("mail.seller.example", "seller.example", True),
    ("seller.example", "mail.seller.example", True),
    ("SELLER.example", "seller.EXAMPLE", True),
    ("seller.example", "other.example", False),
    ("seller.example", "seller.example.evil.example", False),
    ("a.co.uk", "b.co.uk", False),
    ("seller.example", "", False),
])
def test_aligned(from_domain, dkim_domain, expected):
    assert aligned(from_domain, dkim_domain) is expected


# -- the dnspython resolver (no network: the dnspython resolver is a stand-in) ------------


class _Answer:
    def __init__(self, rrset) -> None:
        self.rrset = rrset


class _FakeResolver:
    def __init__(self, outcome) -> None:
        self.outcome = outcome
        self.asked: list[str] = []

    def resolve(self, qname, rdtype, **kwargs):
        self.asked.append(str(qname))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_dns_resolver_maps_answers():
    strings = SimpleNamespace(strings=(b"v=DKIM1; k=rsa; ", b"p=AAAA"))
    fake = _FakeResolver(_Answer([strings]))
    assert DnsResolver(resolver=fake).txt("S._domainkey.Seller.Example") == [
        b"v=DKIM1; k=rsa; p=AAAA"]
    assert fake.asked == ["s._domainkey.seller.example."]  # absolute: no search list
    assert DnsResolver(resolver=_FakeResolver(_Answer(None))).txt("x.example") == []
    assert DnsResolver(resolver=_FakeResolver(dns.resolver.NXDOMAIN())).txt("x.example") == []
    for trouble in (dns.resolver.LifetimeTimeout(timeout=3.0, errors=[]),
                    dns.resolver.NoNameservers()):
        with pytest.raises(DnsTempError):
            DnsResolver(resolver=_FakeResolver(trouble)).txt("x.example")
    assert DnsResolver(resolver=_FakeResolver(_Answer(None))).txt("a..b") == []


def test_dns_time_per_message_is_bounded(seller, monkeypatch):
    monkeypatch.setattr("relay.dkim_verify.DNS_BUDGET", 0.0)
    message = seller_message()
    resolver = table_for(seller)
    result = verify_inbound(seller.sign(message) + message, "seller.example", resolver)
    assert result.result == "temperror" and resolver.queries == []


def test_selector_must_be_a_dns_name(tmp_path, rsa_key):
    for bad in ("", "a b", "sel;x=1", "-x", "x..y"):
        with pytest.raises(DkimKeyError, match="dkim.selector"):
            SigningKey(bad, rsa_key)
    config = load_config(tmp_path, selector="bad selector")
    ensure_key(config)
    with pytest.raises(DkimKeyError, match="dkim.selector"):
        Signer.from_config(config)


def test_rsa_sha1_is_not_accepted(other_key):
    pem = other_key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    message = seller_message()
    header = dkim.sign(message, b"mail2024", b"seller.example", pem,
                       signature_algorithm=b"rsa-sha1")
    resolver = TableResolver({"mail2024._domainkey.seller.example": public_key_value(other_key)})
    assert dkim.verify(header + message, dnsfunc=dnsfunc(resolver))  # dkimpy would accept it
    result = verify_inbound(header + message, "seller.example", resolver)
    assert result.result == "fail" and "rsa-sha1" in result.detail  # RFC 8301


_NAMES = st.sampled_from([b"From", b"from", b"FROM ", b"To", b"Subject", b"Reply-To",
                          b"X-Other", b"Date"])
_VALUES = st.lists(st.sampled_from([b" ", b"\t", b"  ", b"\r\n ", b"\n", b"\r", b"a", b"b c",
                                    b"\xc3\xa9", b"\x0b"]), max_size=8).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(headers=st.lists(st.tuples(_NAMES, _VALUES), min_size=1, max_size=8),
       include=st.lists(st.sampled_from([b"from", b"to", b"subject", b"reply-to", b"date"]),
                        max_size=6),
       sig=_VALUES)
def test_the_header_hash_is_dkimpys(headers, include, sig):
    """relay.dkim_sign hashes the signed fields itself, without dkimpy's regexes."""
    from relay.dkim_sign import _CANON, _relaxed_value, _selected

    theirs = hashlib.sha256()
    dkim.hash_headers(theirs, _CANON, _CANON.canonicalize_headers(headers), include,
                      (b"DKIM-Signature", b" v=1; b=" + sig), {b"b": b""})
    emptied = dkim.RE_BTAG.sub(b"\\1", b" v=1; b=" + sig)  # as _unsigned_field has it
    ours = hashlib.sha256(b"".join(_selected(headers, include)) + b"dkim-signature:"
                          + _relaxed_value(emptied)[:-2])
    assert ours.digest() == theirs.digest()
