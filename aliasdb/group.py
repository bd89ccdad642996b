"""Group commit: the writes of the messages that finish in one turn of the event loop go
into one transaction.

A commit writes every page it dirtied (one WAL frame each on SQLite) and pays its own
BEGIN and COMMIT. The pages at the tail of the messages and threads tables and of the
time index are the same for every record, so records committed together share them.
Nothing waits for a group to fill: the writes queued while the loop runs its ready
callbacks are committed by the next one, so a lone message costs one loop turn more.

Each caller's writes run in a savepoint of their own when the group has several: one
that fails is rolled back alone and raises in its own caller. Every caller resumes only
after the COMMIT, with its result or the commit's error, so a message is still answered
``250`` only once its record is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class GroupCommit:
    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._pending: list[tuple[Callable[[], Any], asyncio.Future]] = []

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` (synchronous store calls) in the next group's transaction."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((work, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._backend.transaction():
                if len(batch) == 1:  # alone: the transaction is its savepoint
                    outcomes.append((True, batch[0][0]()))
                else:
                    outcomes.extend(self._each_in_a_savepoint(batch))
        except Exception as exc:  # the COMMIT (or a lone writer) failed: nothing was kept
            outcomes = [(False, exc)] * len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled; the writes stand all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _each_in_a_savepoint(self, batch: list) -> list[tuple[bool, Any]]:
        run = self._backend.run
        outcomes: list[tuple[bool, Any]] = []
        for work, _ in batch:
            run("SAVEPOINT grouped")
            try:
                outcomes.append((True, work()))
            except Exception as exc:
                run("ROLLBACK TO SAVEPOINT grouped")
                outcomes.append((False, exc))
            run("RELEASE SAVEPOINT grouped")
        return outcomes
