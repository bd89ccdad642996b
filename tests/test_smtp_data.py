"""relay.smtp_data: the DATA lines as aiosmtpd reads them, into one buffer."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the bulk reader against the line-by-line one it replaced ------------------------------


async def _by_lines(reader: asyncio.StreamReader, size_limit: int | None,
                    line_limit: int) -> tuple[bytearray, str | None]:
    """aiosmtpd's way, one readuntil(CRLF) per line (the reader before this one)."""
    data, size, problem, partial = bytearray(), 0, None, False
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            problem, data, partial = problem or TOO_LONG, bytearray(), True
            size += len(await reader.read(exc.consumed))
            continue
        size += len(line)
        if partial:
            partial = False
            continue
        if line == b".\r\n":
            return data, problem
        if problem is not None:
            continue
        if size_limit and size > size_limit:
            problem, data = TOO_MUCH, bytearray()
        elif len(line) > line_limit:
            problem, data = TOO_LONG, bytearray()
        else:
            data += line[1:] if line[:1] == b"." else line


def _in_pieces(reader_fn, wire: bytes, cuts: list[int], size_limit: int | None):
    """Run ``reader_fn`` while the wire arrives in pieces cut at ``cuts``."""
    async def go():
        reader = asyncio.StreamReader(limit=LIMIT)
        task = asyncio.ensure_future(reader_fn(reader, size_limit, LIMIT))
        at = 0
        for cut in [*sorted(set(cuts)), len(wire)]:
            if cut > at:
                reader.feed_data(wire[at:cut])
                at = cut
            await asyncio.sleep(0)  # let the reader see what has come so far
        reader.feed_eof()
        data, problem = await task
        return bytes(data), problem, await reader.read()
    return asyncio.run(go())


_LINE = st.one_of(
    st.sampled_from([b"", b".", b"..", b". ", b".x", b"x.", b"\r", b"\n", b"\r.\r",
                     b"a\n.", b"-- ", b"\r\n.\r"]),
    st.binary(max_size=30).map(lambda b: b.replace(b"\r\n.\r\n", b"")),
    st.integers(990, 1500).map(lambda n: b"y" * n),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=6),
       size_limit=st.sampled_from([None, 50, 2000]))
def test_bulk_reading_gives_what_line_by_line_reading_gave(lines, cuts, size_limit):
    message = b"".join(line + b"\r\n" for line in lines)
    message = message.replace(b"\r\n.\r\n", b"\r\n..\r\n")  # a "." line would end it
    if message.startswith(b".\r\n"):
        message = b"." + message
    wire = message + b".\r\nMAIL FROM:<a@b.example>\r\n"
    new = _in_pieces(read_data, wire, cuts, size_limit)
    old = _in_pieces(_by_lines, wire, cuts, size_limit)
    if old[1] == TOO_LONG and new[1] == TOO_MUCH:  # both apply: the new one says size
        old = (old[0], TOO_MUCH, old[2])
    assert new == old


def test_a_message_of_megabytes_is_read_in_few_reads():
    line = b"QUJD" * 19 + b"\r\n"
    wire = line * 20_000 + b".\r\nQUIT\r\n"
    reads = 0
    plain = asyncio.StreamReader.readexactly

    async def counting(self, n):
        nonlocal reads
        reads += 1
        return await plain(self, n)

    async def go():
        reader = asyncio.StreamReader(limit=LIMIT)
        reader.readexactly = counting.__get__(reader)
        reader.feed_data(wire)
        reader.feed_eof()
        data, problem = await read_data(reader, None, LIMIT)
        return bytes(data), problem, await reader.read()

    assert go and asyncio.run(go()) == (line * 20_000, None, b"QUIT\r\n")
    assert reads < 10  # one line at a time would be 20,000
