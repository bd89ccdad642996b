"""Group commit (aliasdb.group) on both engines: writes queued in one turn of the event loop
share a transaction, each caller resumes only after the COMMIT, a failing writer is rolled
back alone, and a failed COMMIT fails every caller of its group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from aliasdb import DatabaseBusy
from aliasdb.store import Store


@pytest.fixture
def store(store_target) -> Iterator[Store]:
    s = Store.open(store_target)
    yield s
    s.close()


def _record(message_id: str) -> dict:
    return {"id": message_id, "ts": "2024-01-01T00:00:00+00:00", "decision": "delivered"}


def _writer(store: Store, message_id: str, *, fail: bool = False,
            runs: list[str] | None = None) -> Callable[[], str]:
    """Records one message; with ``fail``, the same id again after it, which is refused."""
    def run() -> str:
        if runs is not None:
            runs.append(message_id)
        store.record_message(_record(message_id))
        if fail:
            store.record_message(_record(message_id))
        return message_id
    return run


def _count_transactions(store: Store, monkeypatch) -> list[int]:
    begun: list[int] = []
    real = store.backend.transaction

    @contextmanager
    def counted():
        begun.append(1)
        with real():
            yield

    monkeypatch.setattr(store.backend, "transaction", counted)
    return begun


def test_writes_of_one_loop_turn_share_one_commit(store, store_target, monkeypatch):
    begun = _count_transactions(store, monkeypatch)
    other = Store.open(store_target)  # another connection: sees only what was committed

    async def write(message_id: str) -> str:
        def work() -> str:
            assert store.in_transaction
            store.record_message(_record(message_id))
            return message_id

        done = await store.write_grouped(work)
        assert not store.in_transaction
        assert other.find_message(message_id) is not None  # committed before resuming
        return done

    async def main() -> list[str]:
        together = await asyncio.gather(*(write(f"m{i}") for i in range(5)))
        alone = await write("m5")
        return [*together, alone]

    try:
        assert asyncio.run(main()) == [f"m{i}" for i in range(6)]
        assert len(begun) == 2  # five together, then one on its own
        assert [m["id"] for m in other.list_messages()] == [f"m{i}" for i in range(5, -1, -1)]
    finally:
        other.close()


def test_a_failing_writer_is_rolled_back_alone(store):
    async def main() -> list:
        return await asyncio.gather(
            store.write_grouped(_writer(store, "m1")),
            store.write_grouped(_writer(store, "m2", fail=True)),
            store.write_grouped(_writer(store, "m3")), return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] == "m1" and results[2] == "m3"
    assert isinstance(results[1], Exception)  # an integrity error, in its own caller
    assert store.find_message("m2") is None
    assert {m["id"] for m in store.list_messages()} == {"m1", "m3"}


@pytest.mark.parametrize("writers", [1, 3])
def test_a_failed_commit_fails_every_caller_and_keeps_nothing(store, monkeypatch, writers):
    real = store.backend.transaction

    @contextmanager
    def failing():
        with pytest.raises(RuntimeError), real():
            yield
            raise RuntimeError("rolled back, as a failed COMMIT leaves it")
        raise DatabaseBusy("database is locked")

    monkeypatch.setattr(store.backend, "transaction", failing)

    async def main() -> list:
        return await asyncio.gather(
            *(store.write_grouped(lambda i=i: store.record_message(_record(f"m{i}")))
              for i in range(writers)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, DatabaseBusy) for r in results), results
    monkeypatch.undo()
    assert store.list_messages() == []


def test_a_cancelled_caller_still_gets_its_writes(store):
    async def main() -> None:
        task = asyncio.ensure_future(
            store.write_grouped(lambda: store.record_message(_record("m1"))))
        await asyncio.sleep(0)  # queued; the group runs in the next turn
        task.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.cancelled()

    asyncio.run(main())
    assert store.find_message("m1") is not None  # the message went out: its record stays


def _statements(store: Store, monkeypatch) -> list[str]:
    """The SAVEPOINT statements the group runs (the writers' own go through the store)."""
    seen: list[str] = []
    real = store.backend.run

    def run(sql: str, *params):
        if "SAVEPOINT" in sql:
            seen.append(sql)
        return real(sql, *params)

    monkeypatch.setattr(store.backend, "run", run)
    return seen


def test_a_group_without_a_failure_takes_no_savepoint(store, monkeypatch):
    savepoints = _statements(store, monkeypatch)
    logged: list[str] = []

    async def main() -> list:
        return await asyncio.gather(*(
            store.write_grouped(lambda i=i: store.record_message(_record(f"m{i}")),
                                lambda i=i: logged.append(f"m{i}"))
            for i in range(4)))

    assert asyncio.run(main()) == [None] * 4
    assert savepoints == []
    assert logged == ["m0", "m1", "m2", "m3"]  # each once, in the order of the group
    assert len(store.list_messages()) == 4


def test_after_a_failure_each_writer_runs_in_a_savepoint_and_each_then_runs_once(
        store, monkeypatch):
    savepoints = _statements(store, monkeypatch)
    runs: list[str] = []
    logged: list[str] = []

    async def main() -> list:
        return await asyncio.gather(*(
            store.write_grouped(_writer(store, m, fail=m == "m2", runs=runs),
                                lambda m=m: logged.append(m))
            for m in ("m1", "m2", "m3")), return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] == "m1" and results[2] == "m3"
    assert isinstance(results[1], Exception)
    assert runs == ["m1", "m2", "m1", "m2", "m3"]  # the group again, one by one
    assert logged == ["m1", "m3"]  # once each, and never for the writer that failed
    assert savepoints.count("SAVEPOINT grouped") == 3
    assert savepoints.count("ROLLBACK TO SAVEPOINT grouped") == 1
    assert {m["id"] for m in store.list_messages()} == {"m1", "m3"}


def test_a_lone_failing_writer_is_not_run_again(store):
    runs: list[str] = []

    async def main() -> None:
        await store.write_grouped(_writer(store, "m1", fail=True, runs=runs),
                                  lambda: pytest.fail("logged a failed write"))

    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        asyncio.run(main())
    assert runs == ["m1"]
    assert store.list_messages() == []


def test_a_failing_then_fails_its_caller_but_keeps_the_writes(store):
    def broken() -> None:
        raise RuntimeError("log sink gone")

    async def main() -> list:
        return await asyncio.gather(
            store.write_grouped(lambda: store.record_message(_record("m1")), broken),
            store.write_grouped(lambda: store.record_message(_record("m2"))),
            return_exceptions=True)

    results = asyncio.run(main())
    assert isinstance(results[0], RuntimeError) and results[1] is None
    assert {m["id"] for m in store.list_messages()} == {"m1", "m2"}


def test_inside_an_open_transaction_every_writer_has_its_savepoint(store, monkeypatch):
    savepoints = _statements(store, monkeypatch)
    runs: list[str] = []

    async def main() -> list:
        return await asyncio.gather(*(
            store.write_grouped(_writer(store, m, fail=m == "m2", runs=runs))
            for m in ("m1", "m2", "m3")), return_exceptions=True)

    with store.transaction():  # the group joins it: a rollback would undo more than it
        results = asyncio.run(main())
    assert results[0] == "m1" and isinstance(results[1], Exception) and results[2] == "m3"
    assert runs == ["m1", "m2", "m3"]  # each once
    assert savepoints.count("SAVEPOINT grouped") == 3
    assert {m["id"] for m in store.list_messages()} == {"m1", "m3"}
