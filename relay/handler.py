"""The aiosmtpd handler: turns SMTP events into pipeline calls, nothing more."""

from __future__ import annotations

import asyncio

from relay.logs import get_logger
from relay.pipeline import TEMPFAIL, Pipeline

ONE_RECIPIENT = ("452 4.5.3 one recipient per message: send the message to the next "
                 "recipient in a new transaction")


class RelayHandler:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.log = get_logger()
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()

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
        self.inflight += 1
        self.idle.clear()
        try:
            outcome = await self.pipeline.data(session.relay_id, envelope.relay_ctx,
                                               envelope.original_content)
            return outcome.reply
        except Exception:
            self.log.exception("message.error", session=session.relay_id)
            return TEMPFAIL
        finally:
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
