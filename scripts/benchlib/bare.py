"""The baseline: a bare aiosmtpd passthrough proxy, no policy, no rewrite, no signature.

    python -m benchlib.bare PORT SINK_PORT

Each message is forwarded to the sink over a small pool of reused aiosmtplib connections
(like the relay's smtp delivery) before it is answered 250; a failure is answered 451.
aiosmtpd is given a hostname, so it does no DNS look-up per connection.
"""

from __future__ import annotations

import asyncio
import sys

import aiosmtplib
from aiosmtpd.smtp import SMTP

from benchlib.sink import serve_until_signalled

POOL = 8


class Forward:
    def __init__(self, sink_port: int) -> None:
        self.sink_port = sink_port
        self.idle: list[aiosmtplib.SMTP] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.sink_port,
                                 local_hostname="bare.example", timeout=30, start_tls=False)
        await client.connect()
        return client

    async def handle_DATA(self, server, session, envelope) -> str:
        client = self.idle.pop() if self.idle else await self._connect()
        try:
            await client.sendmail(envelope.mail_from, envelope.rcpt_tos,
                                  envelope.original_content)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()
            return "451 4.4.1 next hop unavailable"
        if len(self.idle) < POOL and client.is_connected:
            self.idle.append(client)
        else:
            client.close()
        return "250 2.0.0 OK"


async def main(port: int, sink_port: int) -> None:
    forward = Forward(sink_port)
    await serve_until_signalled(
        lambda: SMTP(forward, hostname="bare.example", decode_data=False,
                     data_size_limit=64 * 1024 * 1024, enable_SMTPUTF8=True), port)
    for client in forward.idle:
        client.close()


if __name__ == "__main__":
    from benchlib import memtrace

    memtrace.install_from_env()  # only for the memory figures
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
