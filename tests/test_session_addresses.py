"""MAIL and RCPT addresses: the fast path for "<local@domain>" reads them as email's header
parser does (aiosmtpd's way), and leaves everything else to it."""

from __future__ import annotations

from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.session import _PLAIN_ANGLE_ADDR, _parsed_address


def by_email_parser(arg: str) -> tuple[str | None, str]:
    try:
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        address, rest = parse(arg)
    except HeaderParseError:
        return None, ""
    return address.addr_spec, rest


# the characters where the two readings could part: atext, specials, space, quoting,
# comments, brackets, non-ASCII
_ALPHABET = "aZ09.-_+!#$%&'*/=?^`{|}~@<>()[]\":;,\\ \tée"
_ARGS = st.one_of(
    st.text(_ALPHABET, min_size=1, max_size=40),  # RelaySMTP answers "" itself
    st.builds(lambda local, domain, tail: f"<{local}@{domain}>{tail}",
              st.text(_ALPHABET, min_size=1, max_size=12),
              st.text(_ALPHABET, min_size=1, max_size=12),
              st.text(_ALPHABET + "SIZE=123 ", max_size=20)),
)


@settings(max_examples=3000)
@given(_ARGS)
@example("<seller-1@shop.example> SIZE=4096 BODY=8BITMIME")
@example("<a@b.example> (comment) SIZE=1")
@example("<a@b.example>\t(comment)")
@example("<a..b@x.example>")
@example("<a@b.example.>")
@example("<a@b.example>X")
@example("<a@b.example>>")
@example("<>")
@example("<> SIZE=1")
def test_an_address_reads_as_emails_parser_reads_it(arg):
    assert outcome(_parsed_address, arg) == outcome(by_email_parser, arg)


def outcome(read, arg: str):
    try:
        return read(arg)
    except Exception as exc:  # the parser trips on some inputs: both must, the same way
        return type(exc)


def test_the_usual_addresses_take_the_fast_path():
    for arg in ("<seller-1@shop.example>", "<a.b+tag@mail.shop.example> SIZE=4096",
                "<O'Brien@x.example>\tBODY=8BITMIME"):
        assert _PLAIN_ANGLE_ADDR.match(arg)
        assert _parsed_address(arg) == by_email_parser(arg)
