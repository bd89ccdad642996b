"""Delivery back-ends. `deliver` returns only once the message is safe, or raises.

- maildir: the file is fsync'ed in tmp/, renamed into new/ and the folder fsync'ed;
- smtp: the next hop answered 250 for it.

Queueing and retrying towards the internet belong to the next hop, not to us.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import aiosmtplib

from relay.config import Config, HostPort
from relay.delivery_stream import send_streamed
from relay.parsing import Chunk

Message = bytes | Sequence[Chunk]  # one bytes object, or chunks that join into the message


def chunks_of(data: Message) -> Sequence[Chunk]:
    return [data] if isinstance(data, bytes | bytearray) else data


class DeliveryError(Exception):
    """The message was not handed on. ``permanent`` tells 5xx from 4xx."""

    def __init__(self, code: int, status: str, text: str, permanent: bool = False) -> None:
        super().__init__(f"{code} {status} {text}")
        self.code = code
        self.status = status
        self.text = text
        self.permanent = permanent


class Delivery(Protocol):
    async def deliver(self, mail_from: str, rcpt: str, data: Message) -> None: ...

    async def close(self) -> None: ...


_UNSAFE = re.compile(r"[^a-z0-9@._+-]")


class MaildirDelivery:
    """One Maildir per recipient under ``root``, written the way qmail specified it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._counter = 0
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")

    def mailbox(self, rcpt: str) -> Path:
        # The folder name comes from a validated address; flatten anything path-like anyway.
        return self.root / _UNSAFE.sub("_", rcpt.lower())

    async def deliver(self, mail_from: str, rcpt: str, data: Message) -> None:
        self._counter += 1
        name = f"{time.time_ns()}.P{os.getpid()}Q{self._counter}.{self._host}"
        try:
            await asyncio.to_thread(self._write, self.mailbox(rcpt), name, data)
        except OSError as exc:
            raise DeliveryError(451, "4.3.0", f"local delivery failed: {exc.strerror}") from exc

    @staticmethod
    def _write(box: Path, name: str, data: Message) -> None:
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        tmp = box / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks_of(data):
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.rename(tmp, box / "new" / name)
        dirfd = os.open(box / "new", os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    async def close(self) -> None:
        return None


class SmtpDelivery:
    """Forward to the smarthost over a small pool of reused connections."""

    def __init__(self, smarthost: HostPort, helo: str, timeout: float = 60,
                 pool_size: int = 8) -> None:
        self.smarthost = smarthost
        self.helo = helo
        self.timeout = timeout
        self.pool_size = pool_size
        self.fresh_for = 2.0  # seconds a pooled connection is trusted without a NOOP
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname=self.smarthost.host, port=self.smarthost.port,
                                 local_hostname=self.helo, timeout=self.timeout,
                                 start_tls=False)
        await client.connect()
        try:  # once per connection: the transactions on it send none
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:  # an old server: HELO, as sendmail would
            await client.helo()
        return client

    async def _checkout(self) -> aiosmtplib.SMTP:
        """A pooled connection that still answers, or a new one.

        The check happens before the message is sent, never by resending after a failure:
        a next hop that dropped us mid-DATA may have kept the message, and a resend would
        deliver it twice.
        """
        while self._idle:
            client, idle_since = self._idle.pop()
            if time.monotonic() - idle_since < self.fresh_for:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
        return await self._connect()

    async def deliver(self, mail_from: str, rcpt: str, data: Message) -> None:
        client = None
        chunks = chunks_of(data)
        try:
            client = await self._checkout()
            await send_streamed(client, mail_from, rcpt, chunks)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            self._release(client)
            raise _from_response(exc.recipients[0]) from exc
        except aiosmtplib.SMTPResponseException as exc:
            self._release(client)
            raise _from_response(exc) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if client is not None:
                client.close()
            raise DeliveryError(451, "4.4.1", "next hop unavailable, try again later") from exc
        except asyncio.CancelledError:
            # cut off (data_timeout): drop the connection so the next hop cannot still
            # commit a message we are about to answer 451 for
            if client is not None:
                client.close()
            raise
        self._release(client)

    def _release(self, client: aiosmtplib.SMTP | None) -> None:
        if client is None:
            return
        if client.is_connected and len(self._idle) < self.pool_size:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await asyncio.wait_for(client.quit(), 2)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                client.close()


def _from_response(exc: aiosmtplib.SMTPResponseException) -> DeliveryError:
    """Pass the next hop's answer back in class; its text may name the recipient, so not it."""
    permanent = 500 <= exc.code < 600
    if permanent:
        return DeliveryError(550, "5.0.0", "the recipient's mail server refused the message",
                             permanent=True)
    return DeliveryError(451, "4.4.0", "the next hop deferred the message, try again later")


def from_config(config: Config) -> Delivery:
    delivery = config["delivery"]
    if delivery["mode"] == "maildir":
        return MaildirDelivery(delivery["maildir"])
    return SmtpDelivery(config.smarthost, config["server"]["hostname"], delivery["timeout"])
