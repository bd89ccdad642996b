"""The load generator: N concurrent SMTP client connections over raw asyncio streams.

Each connection sends transaction after transaction (MAIL, RCPT, DATA; reconnecting
every ``per_connection`` messages, as an MTA reuses a connection for a while), each to a
random pair of the seeded database. After a warm-up, a timed window (stretched up to 3x
for a slow server until ``min_messages`` completed) counts completed transactions: a 250
to DATA is a success, anything else an error by stage and code.
Latency is from MAIL FROM to the final reply of DATA.

Bounded everywhere: by time (warm-up + window + a grace for the last transactions), by
a total message cap, by a timeout on every read, and by a cap on reconnect failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from benchlib.messages import MessageFactory
from benchlib.seed import PairInfo

HOST = "127.0.0.1"
REPLY_TIMEOUT = 60.0
MAX_RECONNECT_FAILURES = 20


@dataclass
class LoadResult:
    label: str
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, successes only
    window: float = 0.0
    total_sent: int = 0
    start: dict = field(default_factory=dict)  # snapshots taken by the caller's probe
    end: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.window if self.window else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class SmtpError(Exception):
    def __init__(self, stage: str, code: int, text: bytes = b"") -> None:
        super().__init__(f"{stage} {code}")
        self.stage = stage
        self.code = code
        self.text = text


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if not line:
            raise ConnectionError("server closed the connection")
        lines.append(line[4:].rstrip())
        if line[3:4] != b"-":
            return int(line[:3]), b" ".join(lines)


async def command(reader, writer, line: bytes, stage: str, expect: int) -> None:
    writer.write(line)
    code, text = await read_reply(reader)
    if code != expect:
        raise SmtpError(stage, code, text)


async def open_session(port: int, name: bytes = b"loadgen.example"):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, limit=1 << 20), REPLY_TIMEOUT)
    code, text = await read_reply(reader)
    if code != 220:
        writer.close()
        raise SmtpError("greeting", code, text)
    await command(reader, writer, b"EHLO " + name + b"\r\n", "EHLO", 250)
    return reader, writer


def stuffed(data: bytes) -> bytes:
    """Dot-stuffed (RFC 5321 4.5.2), ending with CRLF . CRLF."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def run_load(label: str, port: int, pairs: Sequence[PairInfo], factory: MessageFactory,
                   *, concurrency: int, warmup: float, window: float,
                   min_messages: int = 0, max_messages: int = 1_000_000,
                   per_connection: int = 100,
                   probe: Callable[[], Awaitable[dict]] | None = None, seed: int = 1) -> LoadResult:
    result = LoadResult(label)
    rng = random.Random(seed)
    state = {"measuring": False, "stop": False, "sent": 0}
    counter = iter(range(10**12))

    async def transaction(reader, writer) -> None:
        pair = pairs[rng.randrange(len(pairs))]
        data = stuffed(factory.make(pair.sender, pair.seller_name, pair.alias, pair.order_id,
                                    next(counter)))
        started = time.perf_counter()
        try:
            await command(reader, writer, b"MAIL FROM:<" + pair.sender.encode() + b">\r\n",
                          "MAIL", 250)
            await command(reader, writer, b"RCPT TO:<" + pair.alias.encode() + b">\r\n",
                          "RCPT", 250)
            await command(reader, writer, b"DATA\r\n", "DATA", 354)
        except SmtpError:
            # the refusal is what counts; a server that also hung up shows at the next MAIL
            with contextlib.suppress(OSError, ConnectionError, TimeoutError, ValueError):
                writer.write(b"RSET\r\n")
                await read_reply(reader)
            raise
        writer.write(data)
        await writer.drain()
        code, text = await read_reply(reader)
        if code != 250:
            raise SmtpError("end of DATA", code, text)
        if state["measuring"]:
            result.ok += 1
            result.latencies.append(time.perf_counter() - started)

    async def worker() -> None:
        failures = 0
        while not state["stop"]:
            if failures >= MAX_RECONNECT_FAILURES:  # always counted: the load is gone
                result.errors[f"client gave up after {failures} failed connects"] += 1
                return
            try:
                reader, writer = await open_session(port)
            except (OSError, SmtpError, TimeoutError) as exc:
                failures += 1
                if state["measuring"]:
                    result.errors[f"connect: {type(exc).__name__} {exc}"[:80]] += 1
                await asyncio.sleep(0.05)
                continue
            failures = 0
            try:
                for _ in range(per_connection):
                    if state["stop"] or state["sent"] >= max_messages:
                        state["stop"] = True
                        break
                    state["sent"] += 1
                    try:
                        await transaction(reader, writer)
                    except SmtpError as exc:
                        if state["measuring"]:
                            result.errors[f"{exc.stage} {exc.code} {exc.text[:40]!r}"] += 1
                with contextlib.suppress(OSError, TimeoutError, ConnectionError, SmtpError):
                    writer.write(b"QUIT\r\n")
                    await read_reply(reader)
            except (OSError, TimeoutError, ConnectionError) as exc:
                if state["measuring"]:
                    result.errors[f"connection: {type(exc).__name__}"] += 1
            finally:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()

    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        result.start = await probe() if probe else {}
        t0 = time.perf_counter()
        state["measuring"] = True
        deadline = t0 + window
        # a slow server gets up to 3 windows to complete min_messages (enough for a p99
        # and for CPU per message, which messages in flight at either end would blur);
        # the window ends early once the message cap is reached
        longest = t0 + 3 * window
        while not state["stop"]:
            now = time.perf_counter()
            if now >= longest or (now >= deadline and result.ok >= min_messages):
                break
            await asyncio.sleep(0.02)
        state["measuring"] = False
        result.window = time.perf_counter() - t0
        result.end = await probe() if probe else {}
        state["stop"] = True
        done, pending = await asyncio.wait(workers, timeout=REPLY_TIMEOUT + 5)
        for task in pending:
            task.cancel()
            result.errors["no answer within the grace after the window"] += 1
        for task in done:
            if task.exception() is not None:
                result.errors[f"client bug: {task.exception()!r}"[:80]] += 1
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    result.total_sent = state["sent"]
    return result


async def one_message(port: int, pair: PairInfo, factory: MessageFactory) -> tuple[int, float]:
    """Send one message on a fresh connection: (final code, seconds)."""
    reader, writer = await open_session(port)
    try:
        started = time.perf_counter()
        await command(reader, writer, f"MAIL FROM:<{pair.sender}>\r\n".encode(), "MAIL", 250)
        await command(reader, writer, f"RCPT TO:<{pair.alias}>\r\n".encode(), "RCPT", 250)
        await command(reader, writer, b"DATA\r\n", "DATA", 354)
        writer.write(stuffed(factory.make(pair.sender, pair.seller_name, pair.alias,
                                          pair.order_id, 0)))
        await writer.drain()
        code, _ = await read_reply(reader)
        elapsed = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            await read_reply(reader)
        return code, elapsed
    finally:
        writer.close()


async def idle_sessions(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections that said EHLO and then wait; the caller closes them."""
    writers = []
    try:
        for _ in range(count):
            _, writer = await open_session(port)
            writers.append(writer)
    except BaseException:
        for writer in writers:
            writer.close()
        raise
    return writers


async def xstat(port: int) -> tuple[int, int, int]:
    """The sink's counters: (messages, bytes, DKIM-signed messages)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    try:
        await read_reply(reader)
        writer.write(b"XSTAT\r\n")
        code, text = await read_reply(reader)
        writer.write(b"QUIT\r\n")
        messages, size, signed = text.split()[:3]
        return int(messages), int(size), int(signed)
    finally:
        writer.close()
