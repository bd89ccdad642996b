"""A message's DATA, written to the next hop chunk by chunk.

aiosmtplib's `sendmail` takes one bytes object and copies it twice on the way (line
endings normalized, dots stuffed), plus once more to count it for SIZE=: for a 1 MB
attachment that is three more copies of the message in memory, and those passes were a
tenth of the relay's CPU on small messages. (No SIZE= here: the relay's own limit already
bounds what it sends.) Forwarded messages come as chunks (relay.rewrite.rewrite_parts)
with CRLF line endings only (relay.wire refused anything else; checked again here), and
the base64 runs among them hold no line that starts with a dot, so they go to the socket
as they are; the
transport's flow control keeps what waits in memory to about 64 KB.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence

import aiosmtplib

from relay.parsing import Chunk
from relay.rewrite_mime import crlf

_PIECE = 64 * 1024
_DOT_AFTER_LF = re.compile(rb"\n\.")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def _stuffed(piece: Chunk, line_start: bool) -> Chunk:
    """The piece with a dot doubled at the start of each line (RFC 5321 4.5.2)."""
    first = line_start and piece[:1] == b"."
    if not first and not _DOT_AFTER_LF.search(piece):
        return piece
    data = _DOT_AFTER_LF.sub(b"\n..", bytes(piece))
    return b"." + data if first else data


async def send_streamed(client: aiosmtplib.SMTP, mail_from: str, rcpt: str,
                        chunks: Sequence[Chunk]) -> None:
    """MAIL, RCPT and DATA on a connected client; raises like `sendmail` does."""
    # The commands are written here, not by client.mail()/rcpt(): those parse each
    # address again with email.utils and take a lock, per message, for a connection
    # only this call uses; and they send an address that is not ASCII without SMTPUTF8.
    mail = b"MAIL FROM:<" + _address(mail_from) + b">"
    if not (mail_from.isascii() and rcpt.isascii()):
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPRecipientRefused(
                553, "5.6.7 the next hop does not take internationalized addresses", rcpt)
        mail += b" SMTPUTF8"
    try:
        await _command(client, mail, aiosmtplib.SMTPSenderRefused, mail_from)
        await _command(client, b"RCPT TO:<" + _address(rcpt) + b">",
                       aiosmtplib.SMTPRecipientRefused, rcpt)
        await _command(client, b"DATA", aiosmtplib.SMTPDataError, expect=354)
    except aiosmtplib.SMTPResponseException:
        # as sendmail does: reset, so the pooled connection can be used again
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPException):
            await client.rset()
        raise
    protocol = client.protocol
    line_start = True
    # relay.wire refused a lone LF or CR, so crlf() is a safety net, as aiosmtplib's
    # normalizing was: one must never reach the next hop, where it could end the data
    # early (SMTP smuggling). A memoryview is a base64 run: CRLF only, by construction.
    views = [memoryview(c if isinstance(c, memoryview) else crlf(c)) for c in chunks]
    pieces = [view[at:at + _PIECE] for view in views for at in range(0, len(view), _PIECE)]
    if sum(map(len, pieces)) <= _PIECE:  # the usual message: one write, one segment
        pieces = [b"".join(pieces)] if pieces else []
    for piece in pieces[:-1]:
        protocol.write(_stuffed(piece, line_start))
        line_start = piece[-1:] == b"\n"
        await protocol._drain_helper()  # waits while the socket's buffer is full
    last = _stuffed(pieces[-1], line_start) if pieces else b""
    end = b".\r\n" if (last[-1:] == b"\n" if last else line_start) else b"\r\n.\r\n"
    protocol.write(bytes(last) + end)
    response = await protocol.read_response(timeout=client.timeout)
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)


def _address(address: str) -> bytes:
    data = address.encode("utf-8")
    if _CONTROL.search(data) or b"<" in data or b">" in data:  # never from the relay
        raise ValueError(f"not an address to put in a command: {address!r}")
    return data


async def _command(client: aiosmtplib.SMTP, line: bytes, refused: type, *args: str,
                   expect: int = 250) -> None:
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("the next hop closed the connection")
    protocol.write(line + b"\r\n")
    response = await protocol.read_response(timeout=client.timeout)
    if response.code != expect and not (expect == 250 and response.code == 251):
        raise refused(response.code, response.message, *args)
