"""One SMTP session: aiosmtpd's SMTP with a session id, connection events for the log,
and the limits aiosmtpd leaves open.

`RelaySMTP` closes what aiosmtpd leaves open (relay.limits, relay.wire): concurrent
sessions in all and per client, commands and unknown commands per session, the message
rate per client, command lines that do not end in CRLF, `SIZE=` over the limit answered
`552 5.3.4` at MAIL, and a session timer that measures the client, not the relay:
`server.timeout` bounds the wait for each command and the whole DATA upload (as in
aiosmtpd), and is suspended while the handler works on a message (bounded by
`limits.data_timeout`). DATA goes into one buffer (relay.smtp_data).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError

from aiosmtpd.smtp import MISSING, SMTP

from relay import wire
from relay.handler import RelayHandler
from relay.limits import (
    TOO_MANY_COMMANDS,
    TOO_MANY_MESSAGES,
    TOO_MANY_UNKNOWN,
    Limits,
    client_key,
)
from relay.logs import get_logger
from relay.smtp_data import TOO_LONG, TOO_MUCH, read_data

TOO_BIG = "552 5.3.4 message exceeds the size limit of this server"
# aiosmtpd's own wording for what the relay answers with enhanced status codes
_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    TOO_MUCH: TOO_BIG,
    TOO_LONG: ("500 5.5.2 line too long: a line of a message may hold 1000 octets with its "
               "CRLF (RFC 5321 4.5.3.1.6)"),
    "500 Command line too long": "500 5.5.2 command line too long",
}
READ_SIZE = 64 * 1024
_COMMAND = object()  # the default of the wrapped readuntil: called without an argument
_SIZE_PARAM = re.compile(r"(?:^|\s)SIZE=(\d+)(?=\s|$)", re.IGNORECASE)
# "<local@domain>", both dot-atoms of ASCII atext (RFC 5322 3.2.3): how nearly every MAIL
# and RCPT names its address. email's parser takes ~100 us for it; this gives the same.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ANGLE_ADDR = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>[ \t]*")


def _parsed_address(arg: str) -> tuple[str | None, str]:
    """The address a MAIL or RCPT argument names and the parameters after it, as email's
    header parser reads them (aiosmtpd's way); (None, "") if it cannot."""
    plain = _PLAIN_ANGLE_ADDR.match(arg)
    if plain is not None and arg[plain.end():plain.end() + 1] != "(":  # no comment after
        return plain.group(1), arg[plain.end():]
    try:
        parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
        address, rest = parse(arg)
    except HeaderParseError:
        return None, ""
    return address.addr_spec, rest


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with a session id, connection events for the log, and limits."""

    def __init__(self, handler: RelayHandler, connections: set, *,
                 limits: Limits | None = None, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections
        self._limits = limits or Limits()
        self._client = ""
        self._admitted = False
        self._refusal: str | None = None
        self._commands = 0
        self._unknown = 0
        self._overrun = False  # skipping the rest of an over-long command line
        self._handling = False  # the handler's DATA hook is running

    def _create_session(self):
        session = super()._create_session()
        session.relay_id = secrets.token_hex(6)
        return session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:  # the STARTTLS re-entry
            return
        self._connections.add(self)
        # asyncio reads up to 256 KB a time; a big message then sits in memory once
        # more in the reader's buffer. 64 KB reads cost a few more system calls only.
        if hasattr(transport, "max_size"):
            transport.max_size = READ_SIZE
        self._client = client_key(self.session.peer)
        refusal = self._limits.open(self._client)
        self._admitted = refusal is None
        log = get_logger(session=self.session.relay_id)
        if refusal is None:
            log.info("connection.open")
        else:
            self._refusal = refusal.format(host=self.hostname)
            log.warning("connection.refused", reason=refusal.split(" ", 3)[3])
        self._guard_reader()

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        if self._admitted:
            self._admitted = False
            self._limits.close(self._client)
        get_logger().info("connection.close", session=self.session.relay_id)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self._refusal is None:
            await super()._handle_client()
            return
        # over a concurrent-session limit: 421 instead of the greeting, then hang up
        with contextlib.suppress(ConnectionError):
            await self.push(self._refusal)
        if self.transport is not None:
            self.transport.close()

    async def push(self, status) -> None:
        if isinstance(status, str):
            status = _REPLIES.get(status, status)
        await super().push(status)

    # -- command lines -----------------------------------------------------------------

    def _guard_reader(self) -> None:
        """Screen every command line before aiosmtpd sees it (DATA lines pass as they are).

        aiosmtpd reads a command with `readuntil()` (up to LF), DATA lines with
        `readuntil(CRLF)` and AUTH responses with `readline()`, which passes LF: only the
        call without an argument is a command. The StreamReader is the one the transport
        feeds (also after STARTTLS), so its `readuntil` is wrapped in place.
        """
        reader = self._reader
        plain = reader.readuntil

        async def readuntil(separator: bytes | object = _COMMAND) -> bytes:
            if separator is not _COMMAND:
                return await plain(separator)
            return await self._read_command(plain)

        reader.readuntil = readuntil

    async def _read_command(self, plain) -> bytes:
        while True:
            if self._overrun:
                line = await plain()  # aiosmtpd drops the rest and answers 500
                self._overrun = False
                return line
            try:
                line = await plain()
            except asyncio.LimitOverrunError:
                self._overrun = True
                await self._count(unknown=True)
                raise
            problem = wire.command_problem(line, self._smtp_methods)
            await self._count(unknown=problem is not None)
            if problem is None:
                return line
            get_logger(session=self.session.relay_id).info("smtp.bad_command",
                                                           reply=problem[:9])
            await self.push(problem)

    async def _count(self, unknown: bool) -> None:
        self._commands += 1
        self._unknown += unknown
        if self._commands > self._limits.max_commands:
            await self._hang_up(TOO_MANY_COMMANDS)
        if self._unknown > self._limits.max_unknown_commands:
            await self._hang_up(TOO_MANY_UNKNOWN)

    async def _hang_up(self, template: str) -> None:
        get_logger(session=self.session.relay_id).warning(
            "connection.limit", reason=template.split(" ", 3)[3])
        with contextlib.suppress(ConnectionError):
            await self.push(template.format(host=self.hostname))
        if self.transport is not None:
            self.transport.close()
        # as aiosmtpd's QUIT does: end the session's task
        raise asyncio.CancelledError

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's, without the typing.Protocol class it defines on every call (for a
        # type hint only): creating it cost more than parsing the address.
        if not arg:
            return "", ""
        address, rest = _parsed_address(arg)
        if address is None:
            return None, None
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    # -- MAIL --------------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        ready = self.session.host_name and not (self._auth_required
                                                and not self.session.authenticated)
        if ready and arg:
            size = _SIZE_PARAM.search(arg)
            if size and self.data_size_limit and int(size.group(1)) > self.data_size_limit:
                await self.push(TOO_BIG)  # aiosmtpd would answer 552 without 5.3.4
                return
            if not self.envelope.mail_from and not self._limits.allow_message(self._client):
                get_logger(session=self.session.relay_id).warning("connection.rate_limited")
                await self.push(TOO_MANY_MESSAGES)
                return
        await super().smtp_MAIL(arg)

    # -- DATA and the session timer ---------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's, reading into one buffer (relay.smtp_data); the handler has handle_DATA.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data, problem = await read_data(self._reader, self.data_size_limit,
                                        self.line_length_limit)
        if problem is not None:
            await self.push(problem)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _reset_timeout(self, duration: float | None = None) -> None:
        if not self._handling:
            super()._reset_timeout(duration)

    async def _call_handler_hook(self, command: str, *args):
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        # The session timer would close the connection and cancel the handler half-way
        # through a delivery: it sleeps while the handler works (bounded by data_timeout).
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._handling = True
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._handling = False
            if self.transport is not None and not self.transport.is_closing():
                self._reset_timeout()
