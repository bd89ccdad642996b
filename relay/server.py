"""The daemon: aiosmtpd on the configured listener, and a clean shutdown.

On SIGTERM/SIGINT the listener closes first, transactions already in DATA finish and
get their answer, then the remaining connections are closed: a client that had not yet
reached DATA was promised nothing and will retry.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket

from aiosmtpd.smtp import SMTP

from aliasdb import Store
from relay.app import build_pipeline
from relay.config import Config, HostPort, parse_hostport
from relay.delivery import Delivery
from relay.dkim import Resolver
from relay.handler import RelayHandler
from relay.logs import get_logger


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with a session id and connection events for the log."""

    def __init__(self, handler: RelayHandler, connections: set, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections

    def _create_session(self):
        session = super()._create_session()
        session.relay_id = secrets.token_hex(6)
        return session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:  # not the STARTTLS re-entry
            self._connections.add(self)
            get_logger().info("connection.open", session=self.session.relay_id)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        get_logger().info("connection.close", session=self.session.relay_id)
        super().connection_lost(error)


class RelayServer:
    def __init__(self, config: Config, *, store: Store | None = None,
                 delivery: Delivery | None = None, resolver: Resolver | None = None) -> None:
        self.config = config
        self.store = store or Store.open(config.database_path)
        self.pipeline = build_pipeline(config, self.store, delivery, resolver)
        self.handler = RelayHandler(self.pipeline)
        self.connections: set[RelaySMTP] = set()
        self.server: asyncio.base_events.Server | None = None
        self.submission: asyncio.base_events.Server | None = None
        self.log = get_logger()

    def _options(self) -> dict:
        server = self.config["server"]
        return {
            "hostname": server["hostname"],  # given, so aiosmtpd does no DNS look-up
            "ident": "relay",
            "data_size_limit": server["max_message_bytes"],
            "enable_SMTPUTF8": True,
            "decode_data": False,
            "timeout": server["timeout"],
        }

    def _protocol(self) -> RelaySMTP:
        return RelaySMTP(self.handler, self.connections, **self._options())

    def _submission_factory(self):
        from relay.submission import AuthGuard, SubmissionSMTP
        from relay.tls import server_context

        sub = self.config["submission"]
        context = server_context(sub["tls_cert"], sub["tls_key"])
        guard = AuthGuard(sub["auth_fail_limit"], sub["auth_fail_window"])
        return lambda: SubmissionSMTP(self.handler, self.connections, store=self.store,
                                      guard=guard, tls_context=context, **self._options())

    async def start(self, sock: socket.socket | None = None,
                    submission_sock: socket.socket | None = None) -> tuple[str, int]:
        self.store.secret  # noqa: B018 -- fail now, not at the first message
        self.server = await self._listen(self._protocol, self.config.listen, sock, "mx")
        sub = self.config["submission"]["listen"]
        if sub or submission_sock is not None:
            listen = parse_hostport(sub, "submission.listen") if sub else None
            self.submission = await self._listen(self._submission_factory(), listen,
                                                 submission_sock, "submission")
        return self.server.sockets[0].getsockname()[:2]

    async def _listen(self, factory, listen: HostPort | None, sock: socket.socket | None,
                      role: str) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        if sock is not None:
            server = await loop.create_server(factory, sock=sock)
        else:
            server = await loop.create_server(factory, listen.host, listen.port)
        host, port = server.sockets[0].getsockname()[:2]
        self.log.info("relay.listening", role=role, host=host, port=port)
        return server

    async def stop(self, grace: float | None = None) -> None:
        if self.server is None:
            return
        self.server.close()
        if self.submission is not None:
            self.submission.close()
        grace = grace if grace is not None else self.config["delivery"]["timeout"] + 5
        try:
            await asyncio.wait_for(self.handler.idle.wait(), grace)
        except TimeoutError:
            self.log.warning("relay.shutdown_timeout", inflight=self.handler.inflight)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await self.server.wait_closed()
        await self.pipeline.delivery.close()
        self.server = None
        self.log.info("relay.stopped")

    async def serve_until_signalled(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.log.info("relay.stopping")
        await self.stop()
        self.store.close()
