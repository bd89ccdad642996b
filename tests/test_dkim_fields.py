"""relay.dkim_sign builds the DKIM-Signature field without dkimpy's per-line regexes, its
b= regex and its second fold: the fields, hashes and folded bytes must be the ones
dkimpy's functions give (the old code, kept here as the oracle), for any input."""

from __future__ import annotations

import base64
import hashlib

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.dkim_keys import ED25519_SHA256, RSA_SHA256
from relay.dkim_sign import (
    _HEADER_NAME,
    SigningError,
    SigningKey,
    _head_fields,
    _relaxed_value,
    _signed,
    _unsigned_field,
)

SETTINGS = settings(max_examples=2000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- the header block's fields -----------------------------------------------------------

LINES = st.sampled_from([
    b"From: a@b.example", b"To: c@d.example", b"Subject: x", b" folded", b"\tfolded", b"",
    b"From a@b Mon Jan  1", b"From x", b":colon first", b"::two", b"X-A:", b"x y: z",
    b"N\xc3\xa9: 8-bit", b"\x00\x01 no name", b"Content-Type: text/plain; a=b",
    b"X-Mixed: a\rb", b"A-1_b.c: d", b"-: dash", b"X:\r", b"X-Long-Name-With-Digits-123: v",
])
EOLS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"])


def dkimpy_fields(head: bytes):
    try:
        return [tuple(h) for h in dkim.rfc822_parse(head)[0]]
    except (dkim.DKIMException, IndexError) as exc:
        return f"cannot sign: {str(exc).splitlines()[0][:80]}"


def our_fields(head: bytes):
    try:
        return _head_fields(head)
    except SigningError as exc:
        return str(exc)


@SETTINGS
@given(st.lists(st.tuples(LINES, EOLS), max_size=12))
def test_the_fields_are_dkimpys(lines):
    head = b"".join(line + eol for line, eol in lines)
    assert our_fields(head) == dkimpy_fields(head)
    assert our_fields(head + b"\r\n") == dkimpy_fields(head + b"\r\n")


def test_the_relay_header_block():
    head = (b"From: Hollow Oak <k3x9@relay.example>\r\nTo: Jane <jane@mail.example>\r\n"
            b"Subject: a very long subject that the rewrite has to fold at a space\r\n"
            b" somewhere\r\nMIME-Version: 1.0\r\n\r\n")
    assert our_fields(head) == dkimpy_fields(head)
    assert len(our_fields(head)) == 4


# -- relaxed header values ---------------------------------------------------------------

VALUE = st.lists(st.sampled_from([b" ", b"\t", b"  ", b"\r\n ", b"\r\n\t", b"\n", b"\r",
                                  b"\r\n", b"a", b"b c", b"\xc3\xa9", b"\x0b", b"\x0c",
                                  b"\x1c"]), max_size=10).map(b"".join)


@SETTINGS
@given(VALUE)
def test_the_relaxed_value_is_dkimpys(value):
    ((_, theirs),) = Relaxed.canonicalize_headers([(b"X", value)])
    assert _relaxed_value(value) == theirs


# -- the DKIM-Signature field ------------------------------------------------------------

def old_unsigned(key, domain, stamp, include, signed, bodyhash):
    """relay.dkim_sign._unsigned_field before it cut b= itself: (fields, digest)."""
    fields = [(b"v", b"1"), (b"a", key.algorithm), (b"c", b"relaxed/relaxed"), (b"d", domain),
              (b"i", b"@" + domain), (b"q", b"dns/txt"), (b"s", key.selector.encode("ascii")),
              (b"t", stamp), (b"h", b" : ".join(include)), (b"bh", bodyhash),
              (b"b", b"0" * 60)]
    unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields),
                         namelen=len(_HEADER_NAME), linesep=b"\r\n")
    unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
    h = hashlib.sha256()
    for field in signed:
        h.update(field)
    h.update(b"dkim-signature:" + _relaxed_value(b" " + unsigned)[:-2])
    return fields, h.digest()


def old_signed(fields, signature, linesep):
    fields = [*fields[:-1], (b"b", base64.b64encode(signature))]
    value = dkim.fold(b"; ".join(b"=".join(f) for f in fields) + linesep,
                      namelen=len(_HEADER_NAME), linesep=linesep)
    return _HEADER_NAME + b": " + value


NAMES = st.sampled_from([b"from", b"to", b"reply-to", b"subject", b"date", b"message-id",
                         b"in-reply-to", b"references", b"mime-version", b"content-type",
                         b"content-transfer-encoding", b"list-unsubscribe"])
LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@SETTINGS
@given(domain=st.lists(LABEL, min_size=1, max_size=6).map(".".join),
       selector=st.lists(LABEL, min_size=1, max_size=3).map(".".join),
       ed25519=st.booleans(),
       stamp=st.integers(0, 10**12),
       include=st.lists(NAMES, min_size=1, max_size=14),
       body_digest=st.binary(min_size=32, max_size=32),
       signature=st.one_of(st.binary(max_size=600), st.sampled_from([b"", b"x"]),
                           st.integers(0, 600).map(lambda n: b"\x01" * n)),
       linesep=st.sampled_from([b"\r\n", b"\n"]))
def test_the_field_is_the_one_dkimpy_folds(domain, selector, ed25519, stamp, include,
                                           body_digest, signature, linesep):
    key = SigningKey(selector, None, ED25519_SHA256 if ed25519 else RSA_SHA256)
    args = (key, domain.encode(), str(stamp).encode(), include,
            [b"from:a\r\n", b"to:b\r\n"], base64.b64encode(body_digest))
    ours = _unsigned_field(*args)
    fields, digest = old_unsigned(*args)
    assert ours.digest == digest
    assert _signed(ours, signature, linesep) == old_signed(fields, signature, linesep)


@pytest.mark.parametrize("bits", [1024, 2048, 3072, 4096])
def test_every_rsa_size_is_folded_like_dkimpy(bits):
    key = SigningKey("relay", None)
    args = (key, b"relay.example", b"1700000000", [b"from", b"to", b"subject", b"from"],
            [], base64.b64encode(bytes(32)))
    ours = _unsigned_field(*args)
    assert ours.folded  # the case this is for
    signature = b"\xff" * (bits // 8)
    assert _signed(ours, signature, b"\r\n") == old_signed(old_unsigned(*args)[0], signature,
                                                          b"\r\n")
