"""Group commit (aliasdb.group) on both engines: writes queued in one turn of the event loop
share a transaction, each caller resumes only after the COMMIT, a failing writer is rolled
back alone, and a failed COMMIT fails every caller of its group."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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
    def work(message_id: str, fail: bool = False):
        def run() -> None:
            store.record_message(_record(message_id))
            if fail:
                store.record_message(_record(message_id))  # the same id again: refused
        return run

    async def main() -> list:
        return await asyncio.gather(
            store.write_grouped(work("m1")), store.write_grouped(work("m2", fail=True)),
            store.write_grouped(work("m3")), return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
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
