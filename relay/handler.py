"""The aiosmtpd handler: turns SMTP events into pipeline calls, nothing more.

Besides the calls, it owns the timing of DATA (see `handle_DATA`) and the checks on the
raw bytes that must run before anything parses them (relay.wire).
"""

from __future__ import annotations

import asyncio

from relay import wire
from relay.logs import get_logger
from relay.pipeline import TEMPFAIL, Pipeline

ONE_RECIPIENT = ("452 4.5.3 one recipient per message: send the message to the next "
                 "recipient in a new transaction")
SHUTTING_DOWN = "421 4.3.2 the relay is shutting down, try again later"
TIMED_OUT = "451 4.4.2 the message could not be handed on in time, try again later"


class RelayHandler:
    def __init__(self, pipeline: Pipeline, *, data_timeout: float = 240) -> None:
        self.pipeline = pipeline
        self.data_timeout = data_timeout
        self.log = get_logger()
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False  # set by RelayServer.stop: no new message is started
        self._tasks: set[asyncio.Task] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        # Every message gets its own decision, so a second recipient waits its turn.
        if envelope.rcpt_tos:
            return ONE_RECIPIENT
        auth_seller = session.auth_data if session.authenticated else None
        reply, ctx = self.pipeline.rcpt(session.relay_id, envelope.mail_from, address,
                                        peer=_peer(session), auth_seller=auth_seller)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
            envelope.relay_ctx = ctx
        return reply

    async def handle_DATA(self, server, session, envelope) -> str:
        """Check the raw bytes, then run the pipeline to its end whatever the client does.

        The pipeline runs in its own task, shielded: a client that hangs up (or a session
        closed at shutdown) cannot cancel a delivery half-way, where the next hop may
        already hold the message and the outcome would go unrecorded. The task answers
        within `limits.data_timeout` (451 past it), under the 10 minutes RFC 5321
        4.5.3.2.6 gives a client to wait for this reply; RelaySMTP's session timer sleeps
        meanwhile. Next-hop stalls end sooner, at `delivery.timeout`, which is shorter.
        """
        if self.stopping:
            return SHUTTING_DOWN
        raw = envelope.original_content
        problem = wire.data_problem(raw)
        if problem is not None:
            self.pipeline.refuse(session.relay_id, envelope.relay_ctx, problem, len(raw))
            return problem
        self.inflight += 1
        self.idle.clear()
        task = asyncio.ensure_future(self._data(session.relay_id, envelope.relay_ctx, raw))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    async def _data(self, session: str, ctx, raw: bytes) -> str:
        try:
            async with asyncio.timeout(self.data_timeout):
                outcome = await self.pipeline.data(session, ctx, raw)
            return outcome.reply
        except TimeoutError:
            self.log.error("message.timeout", session=session, budget_s=self.data_timeout)
            return TIMED_OUT
        except Exception:
            self.log.exception("message.error", session=session)
            return TEMPFAIL

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.inflight -= 1
        if not self.inflight:
            self.idle.set()

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answers 500 with the exception text: permanent, and it leaks.
        self.log.error("smtp.error", error=type(error).__name__, exc_info=error)
        return TEMPFAIL


def _peer(session) -> str:
    peer = session.peer
    return peer[0] if isinstance(peer, tuple) else str(peer or "")

