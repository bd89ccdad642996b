from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.smtp_harness import LoopThread, RunningRelay, Sink, write_config

SELLER_ADDR = "shop@seller.example"
SELLER_INBOX = "orders@seller.example"
BUYER_ADDR = "jane.buyer@mail.example"
ORDER = "302-4418760-1193825"


@pytest.fixture(scope="session")
def loop_thread():
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def sink(loop_thread):
    sink = Sink(loop_thread)
    yield sink
    sink.close()


@pytest.fixture
def relay_factory(tmp_path, loop_thread, sink):
    """Start relays with config overrides; the default delivers over SMTP to the sink."""
    started = []

    def start(with_submission: bool = False, resolver=None, **sections) -> RunningRelay:
        delivery = {"mode": "smtp", "smarthost": f"127.0.0.1:{sink.port}"}
        delivery.update(sections.pop("delivery", {}))
        path = write_config(tmp_path, delivery=delivery, **sections)
        relay = RunningRelay(loop_thread, path, submission=with_submission, resolver=resolver)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.close()


@pytest.fixture
def relay(relay_factory):
    return relay_factory()


@dataclass
class Parties:
    seller_alias: str
    buyer_alias: str


def seed(store, *, buyer_messages: bool = True, order_status: str = "pending",
         completed_at: datetime | None = None, category: str | None = None) -> Parties:
    """One seller with an authorized address and an inbox, one buyer, one order."""
    store.add_seller("s1", "Hollow Oak Woodcraft", SELLER_INBOX)
    store.update_seller("s1", buyer_messages=buyer_messages)
    store.set_sender("s1", SELLER_ADDR, "enabled")
    store.add_buyer("b1", BUYER_ADDR, "Jane Buyer")
    store.upsert_order(ORDER, "s1", "b1", status=order_status, category=category,
                       completed_at=completed_at or (
                           datetime.now(UTC) if order_status == "completed" else None))
    tokens = store.aliases(store.pair("s1", "b1"))
    return Parties(f"{tokens['seller']}@relay.example", f"{tokens['buyer']}@relay.example")


class LogSink:
    """Where the relay's JSON log lines go in tests: kept apart from stdout, which click's
    CliRunner and capsys swap while background servers are still logging."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def mark(self) -> int:
        with self._lock:
            return len(self._parts)

    def events(self, since: int = 0) -> list[dict]:
        with self._lock:
            text = "".join(self._parts[since:])
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


LOGS = LogSink()


@pytest.fixture(autouse=True, scope="session")
def json_logs():
    from relay.logs import configure

    configure("json", stream=LOGS)


@pytest.fixture
def logs():
    """The log events of this test: ``logs()`` returns those written so far."""
    start = LOGS.mark()
    return lambda: LOGS.events(start)


# PostgreSQL (tests/pg.py): pg_server, the session's database (skipped without a server),
# pg_url, a fresh schema of it for one test, and store_target, one database per engine
from tests.pg import pg_server, pg_url, store_target  # noqa: E402, F401
