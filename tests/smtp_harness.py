"""Real servers on loopback for the end-to-end tests: a sink as the next hop, and the relay.

Both run on one event loop in a background thread; tests talk to them with smtplib over
real sockets. Nothing waits by sleeping: start-up returns once the socket is listening.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from aliasdb import Store
from relay import config as relay_config
from relay.dkim import ensure_key
from relay.server import RelayServer

REPO = Path(__file__).resolve().parents[1]


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """The next hop. ``reply`` decides the answer to DATA (None = accept)."""

    messages: list[Received] = field(default_factory=list)
    reply: Callable[[bytes], str | None] | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        answer = self.reply(envelope.original_content) if self.reply else None
        if answer is not None:
            return answer
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.original_content))
        return "250 2.0.0 sink OK"


class Sink:
    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.handler = SinkHandler()
        self.sessions: list[SMTP] = []
        self.smtp_class: type[SMTP] = SMTP  # the protocol of connections made from now on
        sock = bound_socket()
        self.port = sock.getsockname()[1]

        def protocol() -> SMTP:
            smtp = self.smtp_class(self.handler, hostname="sink.example", enable_SMTPUTF8=True)
            self.sessions.append(smtp)
            return smtp

        async def start():
            return await asyncio.get_running_loop().create_server(protocol, sock=sock)

        self.server = loop.run(start())

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def close(self) -> None:
        """Down for good: no listener, and open connections cut, as in a crash."""
        async def stop():
            self.server.close()
            for smtp in self.sessions:
                if smtp.transport is not None:
                    smtp.transport.close()

        self.loop.run(stop())


def write_config(tmp: Path, **sections: dict) -> Path:
    """A relay.toml in ``tmp`` using the repo's policy data and a tmp database."""
    values: dict[str, dict] = {
        "server": {"alias_domain": "relay.example", "hostname": "relay.example"},
        "database": {"path": "relay.db"},
        "dkim": {"key": "dkim.key"},
        "delivery": {"mode": "maildir", "maildir": "maildir", "timeout": 10},
        "policy": {"content_rules": str(REPO / "conf" / "content_rules.toml"),
                   "contact_reasons": str(REPO / "conf" / "contact_reasons.toml")},
    }
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    lines = []
    for name, items in values.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in items.items())
    path = tmp / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


class RunningRelay:
    """The relay on a loopback port, with its own store connection for test set-up."""

    def __init__(self, loop: LoopThread, config_path: Path, submission: bool = False,
                 resolver=None) -> None:
        self.loop = loop
        self.config = relay_config.load(config_path)
        self.store = Store.from_config(self.config)
        self.store.ensure_secret()
        ensure_key(self.config)  # as `relay init` does
        self.resolver = resolver
        sock = bound_socket()
        self.port = sock.getsockname()[1]
        sub_sock = bound_socket() if submission else None
        self.submission_port = sub_sock.getsockname()[1] if sub_sock else None
        self.server = loop.run(self._make(sock, sub_sock))

    async def _make(self, sock: socket.socket, sub_sock: socket.socket | None) -> RelayServer:
        server = RelayServer(self.config, resolver=self.resolver)
        await server.start(sock=sock, submission_sock=sub_sock)
        return server

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example",
                              timeout=30)
        client.ehlo()
        return client

    def send(self, mail_from: str, rcpt: str, data: bytes) -> tuple[int, str]:
        """One transaction; the (code, text) of the final answer, whichever step gave it."""
        with self.client() as client:
            code, text = client.mail(mail_from)
            if code != 250:
                return code, text.decode()
            code, text = client.rcpt(rcpt)
            if code != 250:
                return code, text.decode()
            code, text = client.data(data)
            return code, text.decode()

    def close(self) -> None:
        self.loop.run(self.server.stop(grace=5))
        self.server.store.close()
        self.store.close()


# -- helpers for the hardening, fault-injection and property tests ---------------------

class RawClient:
    """SMTP over a bare socket: send exactly the bytes given, read replies as they come.

    Every read blocks on the socket (with a timeout), never on a sleep.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 20,
                 source: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout,
                                             source_address=(source, 0) if source else None)
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reply(self) -> tuple[int, bytes]:
        """One (possibly multi-line) reply: its code and its lines' text joined by LF."""
        texts = []
        while True:
            line = self._line()
            texts.append(line[4:])
            if line[3:4] != b"-":
                return int(line[:3]), b"\n".join(texts)

    def cmd(self, line: bytes | str) -> tuple[int, bytes]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "client.example") -> tuple[int, bytes]:
        return self.cmd(f"EHLO {name}")

    def at_eof(self) -> bool:
        """True when the server has closed the connection (after any pending replies)."""
        if self.buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def starttls(self, context) -> None:
        assert not self.buffer, "plaintext left over before the TLS handshake"
        self.sock = context.wrap_socket(self.sock, server_hostname="relay.example")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def free_port() -> int:
    """A port nothing listens on right now (for a relay started as a subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAULT = re.compile(rb"fault=([a-z]+)")


@dataclass
class FaultyHandler(SinkHandler):
    """A next hop with faults chosen by a `fault=KIND` marker in the message:

    - tempfail: answers 451; reject: answers 554 with an address in the text;
    - drop: hangs up after the final dot, without an answer;
    - stall: never answers (until the relay gives up and hangs up);
    - hold: waits until `release` is set (from any thread, via `release_hold`);
    - anything else is accepted and recorded. `seen` counts every DATA received.
    Only an accepted message is recorded: this next hop commits at its 250, like an MTA
    whose queue file is written when it answers.
    """

    held: threading.Event = field(default_factory=threading.Event)
    seen: int = 0
    _release: asyncio.Event | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        self.seen += 1
        match = FAULT.search(envelope.original_content)
        kind = match.group(1).decode() if match else ""
        if kind == "tempfail":
            return "451 4.3.0 sink is busy, try again later"
        if kind == "reject":
            return "554 5.7.1 <jane.buyer@mail.example> does not want this"
        if kind == "drop":
            server.transport.close()
            await asyncio.Event().wait()  # cancelled with the connection
        if kind == "stall":
            await asyncio.Event().wait()  # cancelled when the relay hangs up
        if kind == "hold":
            if self._release is None:
                self._release = asyncio.Event()
            self.held.set()
            await self._release.wait()
        return await super().handle_DATA(server, session, envelope)

    def release_hold(self, loop: LoopThread) -> None:
        def release():
            if self._release is None:
                self._release = asyncio.Event()
            self._release.set()

        loop.loop.call_soon_threadsafe(release)


class CuttingSMTP(SMTP):
    """A next hop that hangs up in the middle of DATA when it sees `fault=cut`."""

    _tail = b""

    def data_received(self, data: bytes) -> None:
        window, self._tail = self._tail + data, data[-16:]
        if b"fault=cut" in window and self.transport is not None:
            self.transport.close()
            return
        super().data_received(data)


def make_faulty(sink: Sink) -> FaultyHandler:
    """Turn the test's sink into a faulty next hop (for connections made from now on)."""
    sink.handler = FaultyHandler()
    sink.smtp_class = CuttingSMTP
    return sink.handler
