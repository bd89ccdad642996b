"""Reading a message's DATA lines into one buffer.

aiosmtpd keeps every line as an object of its own and then joins them: for a 1 MB
message that is the message twice over, plus some 60 bytes of object per line. This
reads the same lines the same way (`readuntil(CRLF)`, the same limits, the leading dot
of a line removed) straight into one bytearray, which the pipeline then uses as is.
"""

from __future__ import annotations

import asyncio

TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's replies, mapped by
TOO_MUCH = "552 Error: Too much mail data"               # RelaySMTP.push to ours


async def read_data(reader: asyncio.StreamReader, size_limit: int | None,
                    line_limit: int) -> tuple[bytearray, str | None]:
    """The message up to the line ".", and the refusal if it broke a limit.

    Past a limit the rest is still read (and dropped), so the reply comes after the
    client's end of data, as RFC 5321 4.2.5 implies.
    """
    data = bytearray()
    size, problem = 0, None
    partial = False  # inside a line longer than the reader's buffer: refused, never kept
    # the class's own method: RelaySMTP wraps the instance's to screen command lines
    readuntil = asyncio.StreamReader.readuntil
    while True:
        try:
            line = await readuntil(reader, b"\r\n")
        except asyncio.LimitOverrunError as exc:
            problem, data, partial = problem or TOO_LONG, bytearray(), True
            size += len(await reader.read(exc.consumed))
            continue
        size += len(line)
        if partial:  # the end of that long line: not a line of its own, so never the end
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
            data += memoryview(line)[1:] if line[:1] == b"." else line
