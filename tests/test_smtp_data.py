"""relay.smtp_data: the DATA lines as aiosmtpd reads them, into one buffer."""

from __future__ import annotations

import asyncio

from relay.smtp_data import TOO_LONG, TOO_MUCH, read_data

LIMIT = 1001  # aiosmtpd's line_length_limit, which is also its reader's buffer limit


def read(wire: bytes, size_limit: int | None = None) -> tuple[bytes, str | None, bytes]:
    """(message, refusal, what is left for the next command)."""
    async def go():
        reader = asyncio.StreamReader(limit=LIMIT)
        reader.feed_data(wire)
        reader.feed_eof()
        data, problem = await read_data(reader, size_limit, LIMIT)
        return bytes(data), problem, await reader.read()
    return asyncio.run(go())


def test_lines_are_unstuffed_and_the_next_command_stays_unread():
    wire = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n"
    assert read(wire) == (b"Subject: x\r\n\r\n.leading dot\r\n", None, b"QUIT\r\n")


def test_an_empty_message_ends_at_once():
    assert read(b".\r\nQUIT\r\n") == (b"", None, b"QUIT\r\n")


def test_the_tail_of_a_too_long_line_is_never_the_end_of_data():
    # past the reader's buffer the line arrives in pieces; a piece that reads ".\r\n" is
    # the end of that line, not the end of the message (a smuggling shape)
    wire = b"a" * 1500 + b".\r\nsecond\r\n.\r\nMAIL FROM:<x@y.example>\r\n"
    data, problem, rest = read(wire)
    assert (data, problem, rest) == (b"", TOO_LONG, b"MAIL FROM:<x@y.example>\r\n")


def test_a_line_of_1000_octets_and_crlf_is_refused_and_999_kept():
    ok = b"b" * 997 + b"\r\n"
    assert read(ok + b".\r\n") == (ok, None, b"")
    assert read(b"c" * 1000 + b"\r\n.\r\n")[1] == TOO_LONG


def test_over_the_size_limit_the_rest_is_read_and_dropped():
    wire = b"x" * 60 + b"\r\n" + b"y" * 60 + b"\r\n.\r\nQUIT\r\n"
    assert read(wire, size_limit=100) == (b"", TOO_MUCH, b"QUIT\r\n")
