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


class KeyHolderError(RuntimeError):
    """No signature: the keyholder failed or went away (the message is retried later)."""


class KeyHolder:
    """The worker's end: ``await sign(index, digest)``. The child starts with ``start``
    and again, once, at the next request after it died."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = tuple(str(p) for p in paths)
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self._reader: asyncio.Task | None = None
        self._starting = asyncio.Lock()
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the child and wait for its READY; DkimKeyError if it cannot use a key."""
        # the package's own directory first, so the child imports this very relay
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.keyholder", *self.paths, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            ready = await asyncio.wait_for(proc.stdout.readexactly(len(READY)), START_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError):
            ready = b""
        if ready != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            await proc.wait()
            raise DkimKeyError(err.splitlines()[-1] if err else
                               "the DKIM keyholder process did not start")
        self._proc = proc
        self.starts += 1
        self._reader = asyncio.create_task(self._read_replies(proc))

    async def sign(self, index: int, digest: bytes) -> bytes:
        if self._proc is None:
            async with self._starting:  # concurrent requests share one restart
                if self._proc is None:
                    get_logger().warning("dkim.keyholder_starting", starts=self.starts)
                    await self.start()
        proc = self._proc
        ident, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        future = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            proc.stdin.write(_REQUEST.pack(ident, index, digest))
            return await future
        finally:
            self._pending.pop(ident, None)

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        try:
            while True:
                ident, status, length = _REPLY.unpack(await proc.stdout.readexactly(_REPLY.size))
                payload = await proc.stdout.readexactly(length)
                future = self._pending.get(ident)
                if future is None or future.done():  # its message gave up waiting
                    continue
                if status == 0:
                    future.set_result(payload)
                else:
                    future.set_exception(KeyHolderError(payload.decode(errors="replace")))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self._proc is proc:
                self._proc = None
                get_logger().error("dkim.keyholder_exited", pid=proc.pid,
                                   pending=len(self._pending))
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(KeyHolderError("the DKIM keyholder process exited"))

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.stdin.close()  # end of input: the child exits
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader


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
    try:
        return serve(sys.argv[1:], sys.stdin.buffer, sys.stdout.buffer)
    except DkimKeyError as exc:
        print(exc, file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
