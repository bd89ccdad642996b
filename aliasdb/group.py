"""Group commit: the writes of the messages that finish in one turn of the event loop go
into one transaction.

A commit writes every page it dirtied (one WAL frame each on SQLite) and pays its own
BEGIN and COMMIT. The pages at the tail of the messages and threads tables and of the
time index are the same for every record, so records committed together share them.
Nothing waits for a group to fill: the writes queued while the loop runs its ready
callbacks are committed by the next one, so a lone message costs one loop turn more.

A writer that fails must not take the others down with it. Writers almost never fail,
so a group first runs them one after the other with nothing in between; only when one
raises is that transaction rolled back and the group run again with each writer in a
savepoint of its own (a savepoint costs two statements and a copy of every page it
touches first), so the failing one is rolled back alone and raises in its own caller.
A writer may therefore run twice: it only writes to the store, and whatever else its
caller does once the writes stand (the log line) is its ``then``, which runs once, after
the writes and before the COMMIT. Every caller resumes only after the COMMIT, with its
result or the commit's error, so a message is still answered ``250`` only once its
record is durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)


class _WriterFailed(Exception):
    """A writer of a group raised: roll the group back and run it in savepoints."""


class GroupCommit:
    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._pending: list[tuple[Callable[[], Any], Callable[[], Any] | None,
                                  asyncio.Future]] = []

    async def run(self, work: Callable[[], T], then: Callable[[], Any] | None = None) -> T:
        """Run ``work`` (store calls only: it may run twice) in the next group's
        transaction, then ``then`` once its writes stand; resume after the COMMIT."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((work, then, future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            if self._backend.in_transaction:  # inside one we cannot roll back: no retry
                outcomes = self._in_savepoints(batch)
            else:
                try:
                    outcomes = self._together(batch)
                except _WriterFailed:
                    outcomes = self._in_savepoints(batch)
        except Exception as exc:  # the COMMIT (or a lone writer) failed: nothing was kept
            outcomes = [(False, exc)] * len(batch)
        for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled; the writes stand all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _together(self, batch: list) -> list[Outcome]:
        with self._backend.transaction():
            if len(batch) == 1:  # alone: the transaction is its savepoint
                results = [batch[0][0]()]
            else:
                results = []
                for work, _, _ in batch:
                    try:
                        results.append(work())
                    except Exception as exc:
                        raise _WriterFailed from exc
            return [_then(then, result)
                    for (_, then, _), result in zip(batch, results, strict=True)]

    def _in_savepoints(self, batch: list) -> list[Outcome]:
        run = self._backend.run
        outcomes: list[Outcome] = []
        with self._backend.transaction():
            for work, then, _ in batch:
                run("SAVEPOINT grouped")
                try:
                    result = work()
                except Exception as exc:
                    run("ROLLBACK TO SAVEPOINT grouped")
                    outcomes.append((False, exc))
                else:
                    outcomes.append(_then(then, result))
                run("RELEASE SAVEPOINT grouped")
        return outcomes


def _then(then: Callable[[], Any] | None, result: Any) -> Outcome:
    """The caller's own step once its writes stand; should it fail, the writes still do."""
    if then is None:
        return True, result
    try:
        then()
    except Exception as exc:
        return False, exc
    return True, result
