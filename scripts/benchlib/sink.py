"""The next hop: aiosmtpd that accepts every message and counts it.

    python -m benchlib.sink PORT

`XSTAT` (a command of its own) answers `250 <messages> <bytes> <DKIM-signed messages>`,
so the benchmark can count what arrived in a measured window without a side channel.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP


class Counter:
    messages = 0
    bytes = 0
    signed = 0  # messages that arrived with a DKIM-Signature header

    async def handle_DATA(self, server, session, envelope) -> str:
        content = envelope.original_content
        self.messages += 1
        self.bytes += len(content)
        head = content[:content.find(b"\r\n\r\n")]
        if head.startswith(b"DKIM-Signature:") or b"\nDKIM-Signature:" in head:
            self.signed += 1
        return "250 2.0.0 sink OK"


class SinkSMTP(SMTP):
    async def smtp_XSTAT(self, arg: str) -> None:
        counts = self.event_handler
        await self.push(f"250 {counts.messages} {counts.bytes} {counts.signed}")


async def serve_until_signalled(factory, port: int) -> None:
    """Listen on 127.0.0.1:``port`` until SIGTERM or SIGINT (the sink and the bare proxy)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


async def main(port: int) -> None:
    counter = Counter()
    await serve_until_signalled(
        lambda: SinkSMTP(counter, hostname="sink.example", decode_data=False,
                         data_size_limit=64 * 1024 * 1024, enable_SMTPUTF8=True), port)
    print(f"sink: {counter.messages} messages, {counter.bytes} bytes", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
