"""Reading a message's DATA into one buffer.

aiosmtpd reads DATA a line at a time and keeps every line as an object of its own, then
joins them: for a 1 MB message that is the message twice over plus some 60 bytes per
line, and for every message one `readuntil` per line, a tenth of the relay's time on a
small message. This reads the same bytes by the same rules (the end is "." alone on a
line, lines end in CRLF, the same limits, the leading dot of a line removed) in as few
reads as the transport delivers them: `readuntil` of the whole end-of-data sequence
CRLF "." CRLF, and the limits and the dots are then checked on the buffer in C.
"""

from __future__ import annotations

import asyncio

TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's replies, mapped by
TOO_MUCH = "552 Error: Too much mail data"               # RelaySMTP.push to ours

END = b"\r\n.\r\n"  # the line "." after the last line's CRLF
# What the stream read so far may end with that starts END, and how many more bytes then
# tell whether it is the end: `readuntil` only looks at bytes not yet read.
_STARTS_OF_END = ((b"\r\n.\r", 1), (b"\r\n.", 2), (b"\r\n", 3), (b"\r", 4))


async def read_data(reader: asyncio.StreamReader, size_limit: int | None,
                    line_limit: int) -> tuple[bytearray, str | None]:
    """The message up to the line ".", and the refusal if it broke a limit.

    Past the size limit the rest is still read (and dropped), so the reply comes after
    the client's end of data, as RFC 5321 4.2.5 implies. A message both too big and with
    a too long line is refused as too big.
    """
    data = bytearray()
    size = 0
    seen = b"\r\n"  # the end of what was read: the DATA line's CRLF to begin with
    # the class's own method: RelaySMTP wraps the instance's to screen command lines
    readuntil = asyncio.StreamReader.readuntil
    while not seen.endswith(END):
        need = next((n for start, n in _STARTS_OF_END if seen.endswith(start)), 0)
        if need:
            chunk = await reader.readexactly(need)
        else:
            try:
                chunk = await readuntil(reader, END)
            except asyncio.LimitOverrunError as exc:  # the reader's buffer is full
                chunk = await reader.readexactly(max(exc.consumed, 1))
        size += len(chunk)
        if size_limit and size > size_limit + 3:  # past it even without the final ".\r\n"
            data.clear()  # and keep nothing from now on
        else:
            data += chunk
        seen = (seen + chunk)[-len(END):]
    size -= 3
    if size_limit and size > size_limit:
        return bytearray(), TOO_MUCH
    del data[-3:]  # the line "."; the CRLF before it ends the last line
    if _has_long_line(data, line_limit):
        return bytearray(), TOO_LONG
    if data[:1] == b".":
        del data[0]
    if data.find(b"\r\n.") >= 0:  # not "in": see relay.wire.data_problem
        data = data.replace(b"\r\n.", b"\r\n")
    return data, None


def _has_long_line(data: bytearray, line_limit: int) -> bool:
    """Whether a line, CRLF included, is longer than ``line_limit``. Lines end only at
    CRLF (the data ends with one), so with no bare LF every LF ends a line."""
    if data.count(b"\n") != data.count(b"\r\n"):  # rare, and refused later anyway
        return any(len(line) + 2 > line_limit for line in data.split(b"\r\n"))
    # A line that long has line_limit bytes without LF, which hold a whole aligned block
    # of half that many: only such blocks are measured, in C, and no line is copied.
    block = max(line_limit // 2, 1)
    for start in range(0, len(data) - block + 1, block):
        if data.find(b"\n", start, start + block) == -1:
            line_start = data.rfind(b"\n", 0, start) + 1
            if data.find(b"\n", start) + 1 - line_start > line_limit:
                return True
    return False
