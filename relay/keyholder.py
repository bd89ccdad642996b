"""The DKIM private keys in a process of their own.

A worker parses mail from strangers all day; the process that holds the signing keys
should not (Postfix's rule: each part does one job with the least it needs). So each
worker starts a keyholder child, `python -m relay.keyholder KEY...`: it loads the keys,
then answers one request at a time on its standard input and output. It is sent the
SHA-256 of a message's canonicalized headers and sends back their signature, nothing
else: a compromised worker can have things signed while it runs, but cannot take the keys
away. As a side effect the RSA operation (about 0.4 ms, during which `cryptography`
holds the GIL) leaves the worker's event loop, for another core when one is free.

The wire, all integers big-endian:
    request  = id (4 bytes) + key index (1) + digest (32)
    reply    = id (4) + status (1: 0 signed, 1 failed) + length (2) + signature or error text
The child says READY once its keys are loaded, or exits with the reason on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from relay.dkim_keys import DkimKeyError, load_private_key, sign_digest
from relay.logs import get_logger

READY = b"READY\n"
_REQUEST = struct.Struct(">IB32s")
_REPLY = struct.Struct(">IBH")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
# A signature takes under a millisecond: a child silent this long is stuck, and is
# replaced, rather than holding every message until the handler's data_timeout.
SIGN_TIMEOUT_S = 10.0


class KeyHolderError(RuntimeError):
    """No signature: the keyholder failed or went away (the message is retried later)."""


class _Child(asyncio.SubprocessProtocol):
    """One keyholder child, read as its bytes arrive: replies go straight to the futures
    waiting for them (no reader task, no stream objects: this is on every message)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[bool] = loop.create_future()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.stderr_read: asyncio.Future[None] = loop.create_future()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.alive = True
        self._buffer = bytearray()
        self.stderr = bytearray()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr += data[:max(0, 4096 - len(self.stderr))]
            return
        buffer = self._buffer
        buffer += data
        if not self.ready.done():
            if len(buffer) < len(READY):
                return
            self.ready.set_result(buffer[:len(READY)] == READY)
            del buffer[:len(READY)]
        at = 0
        while len(buffer) - at >= _REPLY.size:
            ident, status, length = _REPLY.unpack_from(buffer, at)
            end = at + _REPLY.size + length
            if len(buffer) < end:
                break
            future = self.pending.pop(ident, None)
            if future is not None and not future.done():  # else its message gave up
                payload = bytes(buffer[at + _REPLY.size:end])
                if status == 0:
                    future.set_result(payload)
                else:
                    future.set_exception(KeyHolderError(payload.decode(errors="replace")))
            at = end
        del buffer[:at]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 2 and not self.stderr_read.done():
            self.stderr_read.set_result(None)
        if fd != 1:
            return
        # stdout is closed once every reply written before the end has been read
        self.alive = False
        if not self.ready.done():
            self.ready.set_result(False)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(KeyHolderError("the DKIM keyholder process exited"))
        self.pending.clear()


class KeyHolder:
    """The worker's end: ``await sign(index, digest)``. The child starts with ``start``
    and again, once, at the next request after it died."""

    def __init__(self, paths: Sequence[str | os.PathLike], *,
                 sign_timeout: float = SIGN_TIMEOUT_S) -> None:
        self.paths = tuple(str(p) for p in paths)
        self.sign_timeout = sign_timeout
        self._transport: asyncio.SubprocessTransport | None = None
        self._child: _Child | None = None
        self._next_id = 0
        self._starting = asyncio.Lock()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        alive = self._child is not None and self._child.alive
        return self._transport.get_pid() if alive else None

    async def start(self) -> None:
        """Start the child and wait for its READY; DkimKeyError if it cannot use a key."""
        # the package's own directory first, so the child imports this very relay
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        transport, child = await asyncio.get_running_loop().subprocess_exec(
            _Child, sys.executable, "-m", "relay.keyholder", *self.paths, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ready = await asyncio.wait_for(asyncio.shield(child.ready), START_TIMEOUT_S)
        except TimeoutError:
            ready = False
        if not ready:
            _kill(transport)
            await asyncio.gather(child.exited, child.stderr_read)
            err = child.stderr.decode(errors="replace").strip()
            raise DkimKeyError(err.splitlines()[-1] if err else
                               "the DKIM keyholder process did not start")
        self._transport, self._child = transport, child
        self.starts += 1

    async def sign(self, index: int, digest: bytes) -> bytes:
        if self._child is None or not self._child.alive:
            async with self._starting:  # concurrent requests share one restart
                if self._child is None or not self._child.alive:
                    if self._child is not None:  # it died: say so, then replace it
                        get_logger().error("dkim.keyholder_exited",
                                           pid=self._transport.get_pid(),
                                           status=self._transport.get_returncode())
                        self._transport.close()
                    await self.start()
        child, transport = self._child, self._transport
        ident, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        future = asyncio.get_running_loop().create_future()
        child.pending[ident] = future
        try:
            transport.get_pipe_transport(0).write(_REQUEST.pack(ident, index, digest))
            async with asyncio.timeout(self.sign_timeout):
                return await future
        except TimeoutError:
            get_logger().error("dkim.keyholder_stuck", pid=transport.get_pid(),
                               timeout_s=self.sign_timeout)
            child.alive = False  # the next request starts a new child at once
            _kill(transport)  # and the requests still waiting on this one fail
            raise KeyHolderError(f"the DKIM keyholder did not answer within "
                                 f"{self.sign_timeout:g} s") from None
        finally:
            child.pending.pop(ident, None)

    async def close(self) -> int | None:
        """End the child's input and wait for it to exit: its exit status."""
        transport, child = self._transport, self._child
        self._transport = self._child = None
        if transport is None:
            return None
        transport.get_pipe_transport(0).close()  # end of input: the child exits
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), STOP_TIMEOUT_S)
        except TimeoutError:
            _kill(transport)
            await child.exited
        transport.close()
        return transport.get_returncode()


def _kill(transport: asyncio.SubprocessTransport) -> None:
    if transport.get_returncode() is None:
        with contextlib.suppress(ProcessLookupError):  # it may be exiting right now
            transport.kill()


def _yield_to_the_worker() -> None:
    """SCHED_BATCH: a request must not make the kernel switch its sender's core over to
    us (wake-up preemption), which would stop that worker's event loop for the whole
    signature; we run on a free core instead, or once the worker waits."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a sandbox says no
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def serve(paths: Sequence[str], stdin, stdout) -> int:
    """The child: load the keys, say READY, sign until the worker closes our input."""
    keys = [load_private_key(path) for path in paths]
    stdout.write(READY)
    stdout.flush()
    while True:
        request = stdin.read(_REQUEST.size)
        if len(request) < _REQUEST.size:
            return 0  # the worker is gone or done
        ident, index, digest = _REQUEST.unpack(request)
        try:
            payload, status = sign_digest(keys[index], digest), 0
        except Exception as exc:  # a bad index, an OpenSSL error: that request fails
            payload, status = f"cannot sign: {exc}".encode()[:1000], 1
        stdout.write(_REPLY.pack(ident, status, len(payload)) + payload)
        stdout.flush()


def main() -> int:
    # Only the end of input stops us: a SIGTERM to the whole group (systemd, Ctrl-C) must
    # not stop signing before the worker has finished the messages it holds.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    _yield_to_the_worker()
    try:
        return serve(sys.argv[1:], sys.stdin.buffer, sys.stdout.buffer)
    except DkimKeyError as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
