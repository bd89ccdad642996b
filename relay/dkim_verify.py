"""Inbound DKIM: does a seller's message carry a valid signature aligned with its From?

Every DNS look-up goes through one ``Resolver`` object: ``DnsResolver`` (dnspython) in
production, ``TableResolver`` in tests, so tests run offline. ``verify_inbound`` is CPU
work (canonicalization, hashing, RSA); the caller runs it in a thread.

dkimpy verifies; Ed25519 signatures (RFC 8463) are checked with ``cryptography`` because
dkimpy can only do them through PyNaCl, which the relay does not depend on.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import dkim
import dns.exception
import dns.name
import dns.resolver
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value
from publicsuffixlist import PublicSuffixList

PASS, FAIL, NONE, TEMPERROR = "pass", "fail", "none", "temperror"
#: Signatures checked per message; each costs a DNS query and a body hash, and a
#: message with hundreds of them must not turn into hundreds of look-ups.
MAX_SIGNATURES = 8
DNS_TIMEOUT = 3.0
#: Seconds of DNS waiting per message, over all its signatures.
DNS_BUDGET = 10.0


class DnsTempError(Exception):
    """A look-up that may succeed later (timeout, SERVFAIL): the verdict is temperror."""


class Resolver(Protocol):
    def txt(self, name: str) -> list[bytes]:
        """The TXT records at ``name`` (each record's strings joined); [] if none.

        Raises DnsTempError when the answer is unknown for now.
        """
        ...


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


class DnsResolver:
    """TXT look-ups with dnspython; NXDOMAIN and empty answers are [], not errors."""

    def __init__(self, timeout: float = DNS_TIMEOUT,
                 resolver: dns.resolver.Resolver | None = None) -> None:
        self.timeout = timeout
        self._resolver = resolver

    def _get(self) -> dns.resolver.Resolver:
        # built lazily: reading /etc/resolv.conf at import time would break offline tests
        if self._resolver is None:
            try:
                self._resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsTempError(f"no DNS resolver configured: {exc}") from None
        return self._resolver

    def txt(self, name: str) -> list[bytes]:
        try:
            qname = dns.name.from_text(_normalize(name) + ".")
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return []  # not a valid DNS name: nothing can be published there
        try:
            answer = self._get().resolve(qname, "TXT", lifetime=self.timeout,
                                         raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no nameservers
            raise DnsTempError(f"DNS look-up failed: {type(exc).__name__}") from None
        if answer.rrset is None:
            return []
        return [b"".join(rdata.strings) for rdata in answer.rrset]


class TableResolver:
    """A fixed table of TXT records, for tests: name -> record or list of records.

    Names in ``tempfail`` raise DnsTempError, as a DNS timeout would.
    """

    def __init__(self, records: Mapping[str, str | bytes | Iterable[str | bytes]] | None = None,
                 tempfail: Iterable[str] = ()) -> None:
        self.records: dict[str, list[bytes]] = {}
        self.tempfail = {_normalize(n) for n in tempfail}
        self.queries: list[str] = []
        for name, value in (records or {}).items():
            self.add(name, value)

    def add(self, name: str, value: str | bytes | Iterable[str | bytes]) -> None:
        values = [value] if isinstance(value, str | bytes) else list(value)
        self.records.setdefault(_normalize(name), []).extend(
            v.encode() if isinstance(v, str) else bytes(v) for v in values)

    def txt(self, name: str) -> list[bytes]:
        name = _normalize(name)
        self.queries.append(name)
        if name in self.tempfail:
            raise DnsTempError(f"DNS look-up failed: {name}")
        return list(self.records.get(name, []))


# -- alignment ---------------------------------------------------------------------------


@functools.cache
def _psl() -> PublicSuffixList:
    # the list bundled with the package (about 30 ms to parse, once); never fetched
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain (public suffix + one label) of ``domain`` (RFC 7489 3.2).

    ``mail.seller.example`` -> ``seller.example``; a public suffix itself stays as is.
    """
    domain = _normalize(domain)
    if not domain:
        return ""
    with contextlib.suppress(UnicodeError):  # A-labels, as d= carries them
        domain = domain.encode("idna").decode("ascii")
    return _psl().privatesuffix(domain) or domain


def aligned(from_domain: str, dkim_domain: str) -> bool:
    """Relaxed DKIM alignment: same organizational domain (RFC 7489 3.1.1)."""
    if not from_domain or not dkim_domain:
        return False
    org = organizational_domain(from_domain)
    return bool(org) and org == organizational_domain(dkim_domain)


# -- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimResult:
    result: str                  # "pass" | "fail" | "none" | "temperror"
    domains: tuple[str, ...]     # d= of the signatures that passed
    aligned: bool                # a passing d= aligns with the From domain
    detail: str                  # per signature: "d=... s=...: pass|<reason>"; no addresses

    def as_dict(self) -> dict:
        return {"result": self.result, "domains": list(self.domains),
                "aligned": self.aligned, "detail": self.detail}


class _Notes:
    """A logger for dkimpy that keeps its error lines (the reason a key was refused)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging.Logger's name
        return False

    def debug(self, *args, **kwargs) -> None:
        pass

    info = warning = debug

    def error(self, msg, *args, **kwargs) -> None:
        self.errors.append(str(msg))


class _Ed25519Check:
    """Stands in for a PyNaCl VerifyKey inside dkimpy's ``verify_sig_process``.

    It records the outcome instead of raising: dkimpy's except clause names
    ``nacl.exceptions``, which does not exist without PyNaCl.
    """

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self.key = key
        self.ok = False

    def verify(self, digest: bytes, signature: bytes) -> None:
        try:
            self.key.verify(signature, digest)
            self.ok = True
        except (InvalidSignature, ValueError):
            self.ok = False


def _ed25519_public_key(name: bytes, record: bytes | None) -> ed25519.Ed25519PublicKey:
    if not record:
        raise dkim.KeyFormatError(f"missing public key: {name!r}")
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList as exc:
        raise dkim.KeyFormatError(str(exc)) from None
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        raise dkim.KeyFormatError("bad version")
    if tags.get(b"k", b"rsa") != b"ed25519":
        raise dkim.KeyFormatError("key record is not k=ed25519")
    services = tags.get(b"s", b"*").split(b":")
    if not {b"*", b"email"} & {s.strip() for s in services}:
        raise dkim.KeyFormatError("key record is not for email")
    if not tags.get(b"p"):
        raise dkim.KeyFormatError("key revoked")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(tags[b"p"]))
    except (ValueError, binascii.Error):
        raise dkim.KeyFormatError("could not parse ed25519 public key") from None


class _Verifier(dkim.DKIM):
    """dkimpy's DKIM, with Ed25519 keys loaded and checked through ``cryptography``."""

    def verify_sig(self, sig, include_headers, sig_header, dnsfunc):
        if sig.get(b"a") == b"rsa-sha1":  # RFC 8301 3.1: verifiers must not accept it
            raise dkim.ValidationError("rsa-sha1 is not accepted")
        if sig.get(b"a") != b"ed25519-sha256":
            try:
                return super().verify_sig(sig, include_headers, sig_header, dnsfunc)
            except dkim.NaClNotFoundError:  # dkimpy met a k=ed25519 record
                raise dkim.KeyFormatError("key record k= does not match a=") from None
        name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
        check = _Ed25519Check(_ed25519_public_key(name, dnsfunc(name, timeout=self.timeout)))
        self.pk, self.keysize, self.ktag, self.seqtlsrpt = check, 256, b"ed25519", False
        return self.verify_sig_process(sig, include_headers, sig_header, dnsfunc) and check.ok


def _dnsfunc(resolver: Resolver):
    """dkimpy's ``dnsfunc(name, timeout) -> bytes | None`` over a Resolver, cached per call."""
    cache: dict[bytes, bytes | None] = {}
    spent = [0.0]

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        if name not in cache:
            try:
                text = name.decode("ascii")
            except UnicodeDecodeError:
                cache[name] = None
                return None
            if spent[0] >= DNS_BUDGET:  # slow DNS must not hold the SMTP session for long
                raise DnsTempError("DNS budget for this message used up")
            started = time.monotonic()
            try:
                records = resolver.txt(text)  # DnsTempError propagates: it is not a "fail"
            finally:
                spent[0] += time.monotonic() - started
            # RFC 6376 3.6.2.2: several records are undefined; take the first DKIM one
            dkim_records = [r for r in records if r.lstrip().startswith(b"v=DKIM1")]
            cache[name] = (dkim_records or records or [None])[0]
        return cache[name]

    return lookup


_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _clean(value: bytes | str, limit: int = 80) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return _UNSAFE.sub("?", value)[:limit]


# dkimpy's own wording; anything else (it also quotes raw tag values and header lines,
# which may hold addresses) is replaced by a fixed label, so details are safe to log
_KNOWN_REASON = re.compile(
    r"(body hash mismatch|missing [a-z]{1,3}=|missing public key|unknown signature algorithm"
    r"|[a-z]{1,2}= (value|domain) is [a-z0-9 /=]+|public key too small|bad version"
    r"|could not parse (RSA|ed25519) public key|incomplete RSA public key|key revoked"
    r"|unknown algorithm in k= tag|unknown service type in s= tag|digest too large for modulus"
    r"|key record [a-z0-9=. ]+|body extends past l=|DNS look-up failed"
    r"|The From header field MUST be signed|rsa-sha1 is not accepted)")


def _reason(text: str, fallback: str = "invalid signature") -> str:
    text = re.sub(r"\bb'([a-z]{1,3})'", r"\1", " ".join(str(text).split()))
    match = _KNOWN_REASON.match(text)
    return match.group(0).strip() if match else fallback


def _exception_reason(exc: Exception) -> str:
    if isinstance(exc, dkim.KeyFormatError):
        return _reason(str(exc), "unusable key record")
    if isinstance(exc, dkim.MessageFormatError):
        return _reason(str(exc), "malformed signature or header")
    if isinstance(exc, dkim.DKIMException):
        return _reason(str(exc))
    return f"invalid signature ({type(exc).__name__})"


def _body_extends_past_l(d: dkim.DKIM, sig: dict) -> bool:
    """True when l= leaves part of the body unsigned (content appended after signing)."""
    if b"l" not in sig:
        return False
    try:
        canon = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        return len(canon.canonicalize_body(d.body)) > int(sig[b"l"])
    except Exception:  # noqa: BLE001 - a malformed l= or c= already failed verification
        return True


def verify_inbound(message: bytes, from_domain: str, resolver: Resolver) -> DkimResult:
    """Verify every DKIM-Signature of ``message`` (up to MAX_SIGNATURES).

    ``result`` is "pass" when at least one signature verifies, else "temperror" when a
    DNS look-up failed temporarily, else "fail" (signatures, none valid) or "none" (no
    signature). ``aligned`` says whether a passing d= has the organizational domain of
    ``from_domain``. Never raises on bad input.
    """
    if isinstance(message, str):
        message = message.encode("utf-8", "surrogateescape")
    if not isinstance(message, bytes | bytearray | memoryview):
        return DkimResult(NONE, (), False, f"not a message ({type(message).__name__})")
    message = bytes(message)
    notes = _Notes()
    try:
        d = _Verifier(message, logger=notes)
    except Exception as exc:  # noqa: BLE001 - garbage in, a verdict out
        present = b"dkim-signature:" in message.lower()
        return DkimResult(FAIL if present else NONE, (), False,
                          f"unparsable message ({type(exc).__name__})")
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    if count == 0:
        return DkimResult(NONE, (), False, "no signature")

    dnsfunc = _dnsfunc(resolver)
    passed: list[str] = []
    temporary = False
    details: list[str] = []
    for idx in range(min(count, MAX_SIGNATURES)):
        notes.errors.clear()
        d.domain, d.selector, d.signature_fields = None, None, {}
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
            if ok and _body_extends_past_l(d, d.signature_fields):
                ok, outcome = False, "body extends past l="
            elif ok:
                outcome = PASS
            elif notes.errors:  # dkimpy logged why it refused the key
                outcome = _reason(notes.errors[-1], "unusable key record")
            else:
                outcome = "signature did not verify"
        except DnsTempError:
            temporary = True
            outcome = "temperror (DNS look-up failed)"
        except Exception as exc:  # noqa: BLE001 - dkimpy raises all sorts on bad input
            outcome = _exception_reason(exc)
        else:
            if ok:
                domain = _clean(d.domain or b"", 253).lower()
                if domain not in passed:
                    passed.append(domain)
        tags = d.signature_fields if isinstance(d.signature_fields, dict) else {}
        where = ""
        if isinstance(tags.get(b"d"), bytes):  # parsed, even if the signature is invalid
            where = f"d={_clean(tags[b'd'])} s={_clean(tags.get(b's') or b'')}: "
        details.append(f"{where}{outcome}")
    if count > MAX_SIGNATURES:
        details.append(f"{count - MAX_SIGNATURES} more signature(s) not checked")

    is_aligned = any(aligned(from_domain, domain) for domain in passed)
    result = PASS if passed else TEMPERROR if temporary else FAIL
    return DkimResult(result, tuple(passed), is_aligned, "; ".join(details))
