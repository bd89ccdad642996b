"""The daemon: aiosmtpd on the configured listener, and a clean shutdown.

On SIGTERM/SIGINT the listener closes first, transactions already in DATA finish and
get their answer, then the remaining connections are closed: a client that had not yet
reached DATA was promised nothing and will retry. Each connection is a
`relay.session.RelaySMTP`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from aliasdb import Store
from aliasdb.checkpoint import WalCheckpointer
from relay.app import build_pipeline
from relay.config import Config, HostPort, parse_hostport
from relay.delivery import Delivery
from relay.dkim import Resolver
from relay.handler import RelayHandler
from relay.limits import Limits
from relay.logs import get_logger
from relay.session import RelaySMTP

__all__ = ["RelayServer", "RelaySMTP", "warn_if_root"]


def warn_if_root(log=None) -> bool:
    """Log `relay.running_as_root` when the effective user is root; True if so."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0:
        return False
    (log or get_logger()).warning(
        "relay.running_as_root",
        detail="run the relay as an unprivileged user that owns only its database, keys "
               "and maildir (see conf/relay.service); bind ports 25/587 with "
               "CAP_NET_BIND_SERVICE")
    return True


class RelayServer:
    def __init__(self, config: Config, *, store: Store | None = None,
                 delivery: Delivery | None = None, resolver: Resolver | None = None,
                 reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port  # several worker processes on one port (SO_REUSEPORT)
        self.store = store or Store.from_config(config)
        self.pipeline = build_pipeline(config, self.store, delivery, resolver, keyholder=True)
        limits = config["limits"]
        self.limits = Limits.from_config(limits)
        self.handler = RelayHandler(self.pipeline, data_timeout=limits["data_timeout"])
        self.connections: set[RelaySMTP] = set()
        self.server: asyncio.base_events.Server | None = None
        self.submission: asyncio.base_events.Server | None = None
        self.checkpointer: WalCheckpointer | None = None  # while serving, on SQLite
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
        return RelaySMTP(self.handler, self.connections, limits=self.limits,
                         **self._options())

    def _submission_factory(self):
        from relay.submission import AuthGuard, SubmissionSMTP
        from relay.tls import server_context

        sub = self.config["submission"]
        context = server_context(sub["tls_cert"], sub["tls_key"])
        guard = AuthGuard(sub["auth_fail_limit"], sub["auth_fail_window"])
        return lambda: SubmissionSMTP(self.handler, self.connections, store=self.store,
                                      guard=guard, tls_context=context, limits=self.limits,
                                      **self._options())

    async def start(self, sock: socket.socket | None = None,
                    submission_sock: socket.socket | None = None) -> tuple[str, int]:
        self.store.secret  # noqa: B018 -- fail now, not at the first message
        self.handler.stopping = False
        if self.pipeline.signer is not None:
            await self.pipeline.signer.start()  # a key the keyholder cannot use fails here
        self.checkpointer = self.store.checkpoint_in_background()
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
            server = await loop.create_server(factory, listen.host, listen.port,
                                              reuse_port=self.reuse_port or None)
        host, port = server.sockets[0].getsockname()[:2]
        self.log.info("relay.listening", role=role, host=host, port=port)
        return server

    async def stop(self, grace: float | None = None) -> None:
        if self.server is None:
            return
        self.server.close()
        if self.submission is not None:
            self.submission.close()
        self.handler.stopping = True  # a DATA that ends from now on gets 421, not a start
        # every message in the handler is answered within data_timeout
        grace = grace if grace is not None else self.config["limits"]["data_timeout"] + 5
        try:
            await asyncio.wait_for(self.handler.idle.wait(), grace)
        except TimeoutError:
            self.log.warning("relay.shutdown_timeout", inflight=self.handler.inflight)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        await self.server.wait_closed()
        await self.pipeline.delivery.close()
        if self.pipeline.signer is not None:
            await self.pipeline.signer.close()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)
            self.checkpointer = None
        self.server = None
        self.log.info("relay.stopped")

    async def serve_until_signalled(self) -> None:
        warn_if_root(self.log)
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.log.info("relay.stopping")
        await self.stop()
        self.store.close()
