"""The store on both engines: integrity, aliases, orders, strikes, records, many nodes.

Every test that takes ``store`` or ``target`` runs twice: on an SQLite file and on a fresh
PostgreSQL schema (skipped, with the reason, when no server is reachable: tests/pg.py).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aliasdb.store as store_module
from aliasdb import migrations, transfer
from aliasdb.migrations import LATEST, MIGRATIONS, TABLES
from aliasdb.models import Pair
from aliasdb.store import Conflict, NotFound, Store
from aliasdb.tokens import alias_token

TOKEN_RE = re.compile(r"[a-z2-7]{20}")


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> Callable[..., str | Path]:
    """``target(name)``: where the store called ``name`` lives on this test's engine."""
    if request.param == "sqlite":
        return lambda name="relay.db": tmp_path / name
    server = request.getfixturevalue("pg_server")
    urls: dict[str, str] = {}

    def url(name: str = "relay.db") -> str:
        if name not in urls:
            urls[name] = server.new_url()
        return urls[name]

    return url


@pytest.fixture
def opened(target) -> Iterator[Callable[..., Store]]:
    """``opened(name)``: a store on ``target(name)``, closed after the test."""
    stores: list[Store] = []

    def open_(name: str = "relay.db", **kwargs) -> Store:
        stores.append(Store.open(target(name), **kwargs))
        return stores[-1]

    yield open_
    for s in stores:
        s.close()


@pytest.fixture
def store(opened) -> Store:
    s = opened()
    s.ensure_secret()
    return s


@pytest.fixture
def clock(monkeypatch) -> Callable[[datetime], None]:
    """Set the store's notion of "now" (its timestamps have one-second resolution)."""

    def set_now(when: datetime) -> None:
        monkeypatch.setattr(store_module, "now_iso",
                            lambda: when.astimezone(UTC).isoformat(timespec="seconds"))

    return set_now


def _people(s: Store) -> None:
    s.add_seller("s1", "Shop One", "shop1@seller.example")
    s.add_seller("s2", "Shop Two")
    s.add_buyer("b1", "jane@buyer.example", "Jane")
    s.add_buyer("b2", "joe@buyer.example")


# -- schema and secret -------------------------------------------------------------------


def test_open_migrates_once(opened):
    s = opened()
    assert s.schema_version() == LATEST == len(MIGRATIONS)
    assert s.migrated_from == 0
    again = opened()  # re-open: migrations are not re-run
    assert again.schema_version() == LATEST
    assert again.migrated_from == LATEST
    assert again.migrate() == (LATEST, LATEST)


def test_open_without_migrating_leaves_an_empty_database(opened):
    s = opened(migrate=False)
    assert s.schema_version() == 0
    assert s.migrate() == (0, LATEST)
    assert s.schema_version() == LATEST


def test_sqlite_uses_wal_and_a_memory_map(tmp_path):
    s = Store.open(tmp_path / "sub" / "relay.db")
    assert s.engine == "sqlite"
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == LATEST  # kept in step
    # reads through a memory map, and a page cache bigger than SQLite's 2 MB default
    assert s.conn.execute("PRAGMA mmap_size").fetchone()[0] > 0
    assert s.conn.execute("PRAGMA cache_size").fetchone()[0] <= -32 * 1024
    s.close()


def test_sqlite_database_from_before_schema_migrations_is_adopted(tmp_path):
    """A database of the old layout (PRAGMA user_version = 3) migrates in place."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        old = script.replace('"by"', "by")  # as shipped: the column unquoted
        conn.executescript(f"BEGIN;\n{old}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute("INSERT INTO meta VALUES ('secret', ?)", ("ab" * 32,))
    conn.execute("INSERT INTO sellers (id, name, created_at) VALUES ('s1', 'Shop', 'x')")
    conn.commit()
    conn.close()

    s = Store.open(path)
    assert s.migrated_from == 3
    assert s.schema_version() == LATEST
    versions = [r["version"] for r in s._all("SELECT version FROM schema_migrations")]
    assert versions == list(range(1, LATEST + 1))
    assert s.secret == "ab" * 32 and s.seller("s1").name == "Shop"
    s.record_message(_record("m1", "2024-01-01T00:00:00+00:00"))
    assert s.add_report("m1", "buyer", "spam") == 1  # the "by" column, quoted or not
    s.close()


def test_secret_is_created_once(opened):
    s = opened()
    with pytest.raises(NotFound):
        _ = s.secret
    assert s.ensure_secret() is True
    first = s.secret
    assert s.ensure_secret() is False
    assert opened().secret == first


# -- sellers and senders -----------------------------------------------------------------


def test_sellers(store):
    seller = store.add_seller("s1", "Shop One")
    assert (seller.name, seller.inbox, seller.buyer_messages, seller.fulfilment) == (
        "Shop One", None, False, "seller")
    with pytest.raises(Conflict):
        store.add_seller("s1", "Other")
    assert store.seller("s1").name == "Shop One"
    updated = store.update_seller("s1", inbox="in@seller.example", buyer_messages=True,
                                  fulfilment="marketplace", name=None)
    assert (updated.inbox, updated.buyer_messages, updated.fulfilment, updated.name) == (
        "in@seller.example", True, "marketplace", "Shop One")
    with pytest.raises(ValueError):
        store.update_seller("s1", suspended_at="2024-01-01")
    with pytest.raises(NotFound):
        store.update_seller("nobody", name="x")
    assert store.find_seller("nobody") is None
    assert store.suspend_seller("s1").suspended
    assert not store.reinstate_seller("s1").suspended


def test_suspend_keeps_the_first_time(store, clock):
    store.add_seller("s1", "Shop")
    clock(datetime(2024, 1, 1, tzinfo=UTC))
    store.suspend_seller("s1")
    clock(datetime(2024, 2, 1, tzinfo=UTC))
    assert store.suspend_seller("s1").suspended_at == datetime(2024, 1, 1, tzinfo=UTC)


def test_senders(store):
    store.add_seller("s1", "Shop")
    store.set_sender("s1", "a@seller.example", "enabled")
    store.set_sender("s1", "b@seller.example", "enabled")
    store.set_sender("s1", "b@seller.example", "blocked")  # a change, not a second row
    assert [(r["address"], r["status"]) for r in store.senders("s1")] == [
        ("a@seller.example", "enabled"), ("b@seller.example", "blocked")]
    assert store.enabled_senders("s1") == {"a@seller.example"}
    with pytest.raises(NotFound):
        store.set_sender("nobody", "a@seller.example", "enabled")
    assert store.counts()["senders"] == 2


# -- buyers ------------------------------------------------------------------------------


def test_buyers_and_optout(store):
    buyer = store.add_buyer("b1", "jane@buyer.example", "Jane")
    assert (buyer.address, buyer.name, buyer.opted_out) == ("jane@buyer.example", "Jane", False)
    with pytest.raises(Conflict):
        store.add_buyer("b1", "other@buyer.example")
    assert store.set_optout("b1", True).opted_out
    assert not store.set_optout("b1", False).opted_out
    with pytest.raises(NotFound):
        store.set_optout("nobody", True)


# -- pairs and aliases -------------------------------------------------------------------


def test_aliases_stable_per_pair(store, opened):
    _people(store)
    pair = store.pair("s1", "b1")
    assert store.pair("s1", "b1") == pair
    first = store.aliases(pair)
    assert set(first) == {"buyer", "seller"}
    assert all(TOKEN_RE.fullmatch(t) for t in first.values())
    assert first["buyer"] != first["seller"]
    assert store.aliases(pair) == first
    assert opened().aliases(pair) == first  # another connection, another node


def test_aliases_unlinkable_across_pairs(store):
    _people(store)
    tokens = [store.aliases(store.pair(s, b)) for s in ("s1", "s2") for b in ("b1", "b2")]
    every = [t for pair in tokens for t in pair.values()]
    assert len(set(every)) == len(every) == 8
    # the same buyer behind two sellers gets two unrelated buyer aliases
    assert tokens[0]["buyer"] != tokens[2]["buyer"]


def test_alias_tokens_depend_on_the_secret(opened):
    found = []
    for name in ("one.db", "two.db"):
        s = opened(name)
        s.ensure_secret()
        _people(s)
        found.append(s.aliases(s.pair("s1", "b1")))
    assert found[0]["buyer"] != found[1]["buyer"]


def test_resolve_and_revoke(store):
    _people(store)
    pair = store.pair("s1", "b1")
    old = store.aliases(pair)
    resolved = store.resolve_alias(old["buyer"])
    assert (resolved.pair, resolved.role, resolved.revoked) == (pair, "buyer", False)
    assert store.resolve_alias("a" * 20) is None

    revoked = store.revoke_alias(old["buyer"])
    assert revoked.revoked and revoked.pair == pair
    new = store.aliases(pair)
    assert new["buyer"] != old["buyer"] and TOKEN_RE.fullmatch(new["buyer"])
    assert new["seller"] == old["seller"]  # only the revoked side changes
    assert store.resolve_alias(old["buyer"]).revoked
    assert not store.resolve_alias(new["buyer"]).revoked
    assert store.aliases(pair) == new
    with pytest.raises(NotFound):
        store.revoke_alias("b" * 20)


def test_pair_needs_known_parties(store):
    _people(store)
    with pytest.raises(NotFound):
        store.pair("s1", "nobody")
    with pytest.raises(NotFound):
        store.pair("nobody", "b1")
    assert store.counts()["pairs"] == 0


def test_an_alias_carries_the_parties_of_its_pair_row(store):
    _people(store)
    pair = store.pair("s1", "b1")
    tokens = store.aliases(Pair(pair.id, "s2", "b2"))  # the caller's parties are not trusted
    assert store.resolve_alias(tokens["buyer"]).pair == pair
    assert store.alias_of_pair(pair.id, "seller") == store.resolve_alias(tokens["seller"])
    with pytest.raises(sqlite3.IntegrityError):  # no pair, no alias (either engine)
        store.aliases(Pair(pair.id + 1, "s1", "b2"))
    assert store.counts()["aliases"] == 2


def test_sqlite_resolves_an_alias_in_one_probe(tmp_path):
    s = Store.open(tmp_path / "relay.db")
    plan = [r["detail"] for r in s._all("EXPLAIN QUERY PLAN " + Store._RESOLVE, "x")]
    assert plan == ["SEARCH aliases USING PRIMARY KEY (token=?)"]  # no join, no rowid step
    ddl = s._one("SELECT sql FROM sqlite_master WHERE name = 'aliases'")["sql"]
    assert ddl.rstrip().endswith("WITHOUT ROWID")
    s.close()


# -- schema 5: an old database migrated in place -------------------------------------------


def _v4_store(target, monkeypatch) -> tuple[Store, dict[str, tuple]]:
    """A store left at schema 4, with aliases written as schema 4 wrote them (one revoked).

    Returns the store and, per token, what it must resolve to: (pair, role, revoked)."""
    with monkeypatch.context() as patched:
        patched.setattr(migrations, "LATEST", 4)
        s = Store.open(target())
    assert s.schema_version() == 4
    s.ensure_secret()
    _people(s)
    pairs = [s.pair("s1", "b1"), s.pair("s2", "b1"), s.pair("s1", "b2")]
    rows = [(pairs[0], "buyer", 0, "2024-01-01T00:00:00+00:00"), (pairs[0], "buyer", 1, None),
            (pairs[0], "seller", 0, None), (pairs[1], "buyer", 0, None),
            (pairs[1], "seller", 0, "2024-02-01T00:00:00+00:00"), (pairs[2], "seller", 0, None)]
    expected = {}
    for pair, role, generation, revoked_at in rows:
        token = alias_token(s.secret, pair.id, role, generation)
        s._run("INSERT INTO aliases (token, pair_id, role, generation, revoked_at, created_at)"
               " VALUES (?, ?, ?, ?, ?, ?)", token, pair.id, role, generation, revoked_at,
               "2023-12-01T00:00:00+00:00")
        expected[token] = (pair, role, revoked_at is not None)
    return s, expected


def test_a_schema_4_database_keeps_its_aliases_through_migration(target, monkeypatch):
    old, expected = _v4_store(target, monkeypatch)
    before = {t: list(old.dump_table(t, old.table_columns(t))) for t in TABLES}
    old.close()

    s = Store.open(target())
    try:
        assert (s.migrated_from, s.schema_version()) == (4, LATEST)
        for token, (pair, role, revoked) in expected.items():
            found = s.resolve_alias(token)
            assert (found.token, found.pair, found.role, found.revoked) == (
                token, pair, role, revoked)
        # every other row as it was; the aliases as they were, with their pair's parties
        after = {t: list(s.dump_table(t, s.table_columns(t))) for t in TABLES}
        assert {t: rows for t, rows in after.items() if t != "aliases"} == {
            t: rows for t, rows in before.items() if t != "aliases"}
        assert [row[:6] for row in after["aliases"]] == before["aliases"]
        # the live tokens stay live; a revoked side is not reissued until asked for
        pairs = sorted({pair for pair, _, _ in expected.values()}, key=lambda p: p.id)
        first, second, third = (s.aliases(p) for p in pairs)
        assert first["buyer"] == alias_token(s.secret, pairs[0].id, "buyer", 1)
        assert s.alias_of_pair(pairs[0].id, "buyer").token == first["buyer"]
        assert second["seller"] == alias_token(s.secret, pairs[1].id, "seller", 1)
        assert third["buyer"] == alias_token(s.secret, pairs[2].id, "buyer", 0)
        assert s.resolve_alias(third["buyer"]).pair == pairs[2]
        assert s.revoke_alias(first["seller"]).revoked
        assert s.counts()["aliases"] == len(expected) + 2
    finally:
        s.close()


def test_an_export_from_schema_4_imports_with_the_parties_of_each_pair(tmp_path, opened):
    dump = _exported(tmp_path)
    lines = dump.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["schema_version"] == LATEST
    lines[0] = json.dumps({**header, "schema_version": 4})
    start = lines.index(next(x for x in lines if x.startswith('{"table":"aliases"')))
    columns = json.loads(lines[start])["columns"]
    keep = [i for i, c in enumerate(columns) if c not in ("seller_id", "buyer_id")]
    assert len(keep) == len(columns) - 2
    lines[start] = json.dumps({"table": "aliases", "columns": [columns[i] for i in keep]})
    end = start + 1
    while lines[end].startswith("["):
        row = json.loads(lines[end])
        lines[end] = json.dumps([row[i] for i in keep])
        end += 1
    old_dump = tmp_path / "schema-4.jsonl"
    old_dump.write_text("\n".join(lines) + "\n")

    target = opened("moved")
    assert all(c.ok for c in transfer.import_into(target, transfer.Source(old_dump)))
    source = opened("from-new")
    transfer.import_into(source, transfer.Source(dump))
    assert list(target.dump_table("aliases", target.table_columns("aliases"))) == list(
        source.dump_table("aliases", source.table_columns("aliases")))


# -- orders ------------------------------------------------------------------------------


def test_upsert_order_is_idempotent(store):
    _people(store)
    done = datetime(2024, 3, 1, 12, 0)  # naive: taken as UTC
    assert store.upsert_order("302-4418760-1193825", "s1", "b1", category="books",
                              status="completed", completed_at=done) == "inserted"
    assert store.upsert_order("302-4418760-1193825", "s1", "b1", category="books",
                              status="completed",
                              completed_at=done.replace(tzinfo=UTC)) == "unchanged"
    assert store.upsert_order("302-4418760-1193825", "s1", "b1", category="toys",
                              status="completed", completed_at=done) == "updated"
    order = store.find_order("302-4418760-1193825")
    assert (order.category, order.status, order.completed_at) == (
        "toys", "completed", datetime(2024, 3, 1, 12, 0, tzinfo=UTC))
    assert store.counts()["orders"] == 1
    pair = store.pair("s1", "b1")  # the order created the pair
    assert [o.id for o in store.orders_of_pair(pair)] == ["302-4418760-1193825"]
    assert store.find_order("nope") is None


def test_upsert_order_refuses_bad_input_without_writing(store):
    _people(store)
    with pytest.raises(ValueError):
        store.upsert_order("o1", "s1", "b1", status="lost")
    with pytest.raises(NotFound):
        store.upsert_order("o1", "s1", "nobody")
    with pytest.raises(NotFound):
        store.upsert_order("o1", "nobody", "b1")
    assert store.counts()["orders"] == store.counts()["pairs"] == 0


# -- strikes -----------------------------------------------------------------------------


def test_strikes_count_in_window_and_after_reinstatement(store, clock):
    store.add_seller("s1", "Shop")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for day in (0, 10, 20):
        clock(start + timedelta(days=day))
        store.add_strike("s1", "[Important] misuse", f"m{day}")
    assert store.count_strikes("s1", start) == 3
    assert store.count_strikes("s1", start + timedelta(days=5)) == 2  # window edge
    assert [s["message_id"] for s in store.strikes("s1")] == ["m0", "m10", "m20"]

    clock(start + timedelta(days=21))
    store.suspend_seller("s1")
    clock(start + timedelta(days=22))
    store.reinstate_seller("s1")
    assert store.count_strikes("s1", start) == 0  # a clean slate after reinstatement
    assert len(store.strikes("s1")) == 3  # but the history stays
    clock(start + timedelta(days=23))
    store.add_strike("s1", "again")
    assert store.count_strikes("s1", start) == 1


def test_strike_in_the_second_of_reinstatement_does_not_count(store, clock):
    store.add_seller("s1", "Shop")
    clock(datetime(2024, 1, 1, tzinfo=UTC))
    store.add_strike("s1", "misuse")
    store.reinstate_seller("s1")
    assert store.count_strikes("s1", datetime(2023, 12, 1, tzinfo=UTC)) == 0


# -- message records, threads, reviews, reports ------------------------------------------


def _record(message_id: str, ts: str, seller: str = "s1", buyer: str = "b1", **extra) -> dict:
    return {"id": message_id, "ts": ts, "direction": "seller_to_buyer", "seller_id": seller,
            "buyer_id": buyer, "decision": "rejected", "policy": "content",
            "reason": "promotion", "smtp_code": 550,
            "findings": [{"policy": "content", "action": "reject"}], "rule_ids": ["promo-1"],
            **extra}


def test_message_records(store):
    store.record_message(_record("m1", "2024-01-01T00:00:00+00:00"))
    store.record_message(_record("m2", "2024-02-01T00:00:00+00:00", buyer="b2"))
    store.record_message(_record("m3", "2024-03-01T00:00:00+00:00", seller="s2"))
    found = store.find_message("m1")
    assert found["findings"] == [{"policy": "content", "action": "reject"}]
    assert found["rule_ids"] == ["promo-1"]
    assert store.find_message("nope") is None
    assert [m["id"] for m in store.list_messages()] == ["m3", "m2", "m1"]
    assert [m["id"] for m in store.list_messages(seller_id="s1")] == ["m2", "m1"]
    assert [m["id"] for m in store.list_messages(buyer_id="b2")] == ["m2"]
    since = datetime(2024, 1, 15, tzinfo=UTC)
    assert [m["id"] for m in store.list_messages(since=since)] == ["m3", "m2"]
    assert [m["id"] for m in store.list_messages(limit=1)] == ["m3"]


def test_threads(store):
    _people(store)
    pair, other = store.pair("s1", "b1"), store.pair("s2", "b1")
    store.add_thread("<r1@relay.example>", "<o1@seller.example>", pair, "seller_to_buyer",
                     "m1")
    store.add_thread("<r2@relay.example>", "<o2@buyer.example>", other, "buyer_to_seller",
                     "m2")
    by_relay = store.thread_entries(pair, ["<r1@relay.example>"])
    by_original = store.thread_entries(pair, ["<o1@seller.example>", "<o1@seller.example>"])
    assert by_relay == by_original
    assert [e["message_id"] for e in by_relay] == ["m1"]
    assert store.thread_entries(pair, ["<r2@relay.example>"]) == []  # another pair's
    assert store.thread_entries(pair, []) == []


def test_review_requests(store):
    store.add_review_request("o1", "m1")
    store.add_review_request("o1", "m1")  # once is enough
    assert store.review_requested(["o1", "o2"]) == {"o1"}
    assert store.review_requested([]) == frozenset()


def test_reports(store):
    store.record_message(_record("m1", "2024-01-01T00:00:00+00:00"))
    with pytest.raises(NotFound):
        store.add_report("nope", "buyer", "spam")
    first = store.add_report("m1", "buyer", "spam")
    second = store.add_report("m1", "seller", "abuse")
    assert [r["status"] for r in store.list_reports()] == ["open", "open"]
    resolved = store.resolve_report(first, "warned the seller")
    assert (resolved["status"], resolved["note"]) == ("resolved", "warned the seller")
    assert [r["id"] for r in store.list_reports("open")] == [second]
    assert [r["id"] for r in store.list_reports("resolved")] == [first]
    with pytest.raises(NotFound):
        store.resolve_report(999)


# -- transactions ------------------------------------------------------------------------


def test_transaction_rollback_leaves_nothing(store):
    before = store.counts()
    with pytest.raises(RuntimeError), store.transaction():
        store.add_seller("s1", "Shop")
        store.add_buyer("b1", "jane@buyer.example")
        store.upsert_order("o1", "s1", "b1")  # nested: joins the outer transaction
        raise RuntimeError("boom")
    assert store.counts() == before
    assert store.find_seller("s1") is None
    assert not store.in_transaction


def test_transaction_commits(store):
    with store.transaction():
        store.add_seller("s1", "Shop")
        store.add_buyer("b1", "jane@buyer.example")
    assert store.counts()["sellers"] == store.counts()["buyers"] == 1


def test_messages_of_one_second_are_listed_newest_first(store):
    # the relay records seconds: ties keep their insertion order on both engines
    for message_id in ("m-b", "m-a", "m-c"):
        store.record_message(_record(message_id, "2024-01-01T00:00:00+00:00"))
    assert [m["id"] for m in store.list_messages()] == ["m-c", "m-a", "m-b"]
    assert set(store.find_message("m-a")) == set(_record_columns(store))  # no engine extras


def _record_columns(store: Store) -> list[str]:
    return store.table_columns("messages")


# -- several nodes on one database -----------------------------------------------------------


def test_every_node_reads_what_another_wrote(opened):
    """No node-local cache: opt-out, suspension, revocation, strikes, bounce flags."""
    a, b = opened(), opened()
    a.ensure_secret()
    _people(a)
    pair = a.pair("s1", "b1")
    tokens = a.aliases(pair)
    assert b.secret == a.secret  # one secret for every node
    assert not b.find_buyer("b1").opted_out and not b.find_seller("s1").suspended
    a.set_optout("b1", True)
    a.suspend_seller("s1")
    a.revoke_alias(tokens["buyer"])
    a.add_strike("s1", "misuse")
    a.set_bouncing("b1", True)
    assert b.find_buyer("b1").opted_out and b.find_buyer("b1").bouncing
    assert b.find_seller("s1").suspended
    assert b.resolve_alias(tokens["buyer"]).revoked
    assert b.count_strikes("s1", datetime(2000, 1, 1, tzinfo=UTC)) == 1
    assert b.aliases(pair)["buyer"] not in (tokens["buyer"], None)
    assert a.aliases(pair) == b.aliases(pair)


def _at_once(items: list, work: Callable) -> list:
    """Run ``work`` on every item (a store, usually) in its own thread, released together."""
    barrier = threading.Barrier(len(items))
    results: list = [None] * len(items)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = work(items[i])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_first_use_of_a_pair_is_race_free_across_nodes(opened):
    first = opened()
    first.ensure_secret()
    _people(first)
    nodes = [first] + [opened() for _ in range(5)]
    pairs = _at_once(nodes, lambda s: s.pair("s1", "b1"))
    assert len(set(pairs)) == 1
    tokens = _at_once(nodes, lambda s: s.aliases(pairs[0]))
    assert all(t == tokens[0] for t in tokens)
    assert first.counts()["pairs"] == 1 and first.counts()["aliases"] == 2
    first.revoke_alias(tokens[0]["seller"])
    again = _at_once(nodes, lambda s: s.aliases(pairs[0]))
    assert all(t == again[0] for t in again) and again[0]["seller"] != tokens[0]["seller"]
    assert first.counts()["aliases"] == 3


def test_ensure_secret_races_to_one_secret(opened):
    nodes = [opened() for _ in range(4)]
    created = _at_once(nodes, lambda s: s.ensure_secret())
    assert created.count(True) == 1
    assert len({s.secret for s in nodes}) == 1


def test_an_open_import_transaction_does_not_block_lookups(opened, target):
    importer, node = opened(), opened()
    importer.ensure_secret()
    _people(importer)
    tokens = importer.aliases(importer.pair("s1", "b1"))
    done = threading.Event()
    seen: dict[str, object] = {}

    def traffic() -> None:
        seen["alias"] = node.resolve_alias(tokens["buyer"])
        seen["seller"] = node.find_seller("s1")
        seen["orders"] = node.orders_of_pair(seen["alias"].pair)
        if node.engine == "postgresql":  # row locks only: live traffic writes too
            node.record_message(_record("live-1", "2024-01-01T00:00:00+00:00"))
            node.add_strike("s1", "misuse", "live-1")
            node.aliases(node.pair("s2", "b2"))
        done.set()

    with importer.transaction():
        for n in range(50):
            importer.upsert_order(f"o{n}", "s1", "b1", status="shipped")
        worker = threading.Thread(target=traffic)
        worker.start()
        assert done.wait(10), "live traffic waited for an open import transaction"
        assert seen["orders"] == ()  # the import is not committed yet
    worker.join(10)
    assert len(node.orders_of_pair(seen["alias"].pair)) == 50


# -- moving a database -----------------------------------------------------------------------


def _filled(s: Store) -> dict:
    s.ensure_secret()
    _people(s)
    s.set_sender("s1", "a@seller.example", "enabled")
    s.set_password_hash("s1", "scrypt$x")
    s.upsert_order("o1", "s1", "b1", status="completed", completed_at=datetime(2024, 3, 1))
    pair = s.pair("s1", "b1")
    s.aliases(s.pair("s2", "b2"))
    tokens = s.aliases(pair)
    s.revoke_alias(tokens["buyer"])
    tokens = s.aliases(pair)
    for n, message_id in enumerate(("m2", "m1", "m3")):  # one second: insertion order counts
        s.record_message(_record(message_id, "2024-01-01T00:00:00+00:00", pair_id=pair.id,
                                 duration_ms=12.25 + n, auto_reply=n % 2))
    s.add_thread("<r1@relay.example>", "<o1@seller.example>", pair, "seller_to_buyer", "m1")
    s.add_strike("s1", "misuse", "m1")
    s.add_review_request("o1", "m1")
    s.add_report("m1", "buyer", "spam")
    return {"pair": pair, "tokens": tokens}


def test_export_then_import_keeps_every_row(tmp_path, opened):
    source = Store.open(tmp_path / "single-node.db")
    facts = _filled(source)
    dump = tmp_path / "export.jsonl"
    with dump.open("w") as out:
        counts = transfer.export(source, out)
    assert counts == {t: source.table_count(t) for t in TABLES}
    assert counts["messages"] == 3 and counts["meta"] == 1
    before = {t: list(source.dump_table(t, source.table_columns(t))) for t in TABLES}
    listed = [m["id"] for m in source.list_messages()]
    source.close()

    target = opened("moved")
    target.ensure_secret()  # a `relay init`-ed target: the source's secret replaces this one
    result = transfer.import_into(target, transfer.Source(dump))
    assert all(c.ok for c in result)
    assert {c.table: c.imported for c in result} == counts
    after = {t: list(target.dump_table(t, target.table_columns(t))) for t in TABLES}
    assert after == before
    fresh = opened("moved")  # another connection to the target
    assert fresh.aliases(facts["pair"]) == facts["tokens"]
    assert [m["id"] for m in fresh.list_messages()] == listed == ["m3", "m1", "m2"]
    # exported again from the target (either engine), every row line is the same
    again = tmp_path / "again.jsonl"
    with again.open("w") as out:
        assert transfer.export(fresh, out) == counts
    assert again.read_text().splitlines()[1:] == dump.read_text().splitlines()[1:]
    # new ids continue after the imported ones
    assert fresh.add_report("m2", "seller", "abuse") == 2
    assert fresh.pair("s2", "b1").id == 3


def test_import_reads_an_sqlite_file_directly(tmp_path, opened):
    source = Store.open(tmp_path / "single-node.db")
    _filled(source)
    counts = {t: source.table_count(t) for t in TABLES}
    source.close()
    target = opened("moved")
    result = transfer.import_into(target, transfer.Source(tmp_path / "single-node.db"))
    assert {c.table: (c.source, c.imported) for c in result} == {
        t: (n, n) for t, n in counts.items()}


def _exported(tmp_path) -> Path:
    """A filled single-node SQLite database, exported to a JSON-lines file."""
    source = Store.open(tmp_path / "single-node.db")
    _filled(source)
    dump = tmp_path / "export.jsonl"
    with dump.open("w") as out:
        transfer.export(source, out)
    source.close()
    return dump


def test_import_with_a_missing_row_imports_nothing(tmp_path, opened):
    dump = _exported(tmp_path)
    lines = dump.read_text().splitlines(keepends=True)
    strike = next(i for i, line in enumerate(lines) if line.startswith('{"table":"strikes"'))
    del lines[strike + 1]  # one strike lost on the way; the trailer still says 1
    dump.write_text("".join(lines))

    target = opened("moved")
    with pytest.raises(transfer.CountMismatch) as caught:
        transfer.import_into(target, transfer.Source(dump))
    bad = [c for c in caught.value.counts if not c.ok]
    assert [(c.table, c.source, c.read) for c in bad] == [("strikes", 1, 0)]
    assert target.counts() == dict.fromkeys(target.counts(), 0)  # rolled back


def test_import_refuses_a_database_in_use_and_a_truncated_file(tmp_path, opened):
    dump = _exported(tmp_path)
    busy = opened("busy")
    busy.add_seller("s9", "Already here")
    with pytest.raises(transfer.TransferError, match="not empty"):
        transfer.import_into(busy, transfer.Source(dump))
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(dump.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(transfer.TransferError, match="incomplete"):
        transfer.import_into(opened("empty"), transfer.Source(cut))
    assert opened("empty").counts()["sellers"] == 0
    not_an_export = tmp_path / "x.jsonl"
    not_an_export.write_text(json.dumps({"format": "other"}) + "\n")
    with pytest.raises(transfer.TransferError, match="neither"):
        next(transfer.Source(not_an_export).chunks())


# -- PostgreSQL specifics ------------------------------------------------------------------


@pytest.fixture
def pg_store(pg_url) -> Iterator[Store]:
    s = Store.open(pg_url)
    yield s
    s.close()


def test_postgresql_schema_matches_sqlite(pg_store, tmp_path):
    lite = Store.open(tmp_path / "relay.db")
    for table in TABLES:
        assert pg_store.table_columns(table) == lite.table_columns(table), table
    lite.close()


def test_postgresql_compares_text_byte_wise_and_keeps_doubles(pg_store):
    # ISO timestamps and ids order as in SQLite, whatever the server's locale
    rows = pg_store._all("SELECT table_name AS t, collation_name AS c"
                         " FROM information_schema.columns WHERE data_type = 'text'"
                         " AND table_schema = current_schema()")
    collations = {r["c"] for r in rows if r["t"] in TABLES}
    assert len(rows) > 40 and collations == {"C"}
    pg_store.record_message(_record("m1", "2024-01-01T00:00:00+00:00", duration_ms=0.1 + 0.2))
    assert pg_store.find_message("m1")["duration_ms"] == 0.1 + 0.2


def test_postgresql_transactions_are_read_committed_and_pooled(pg_store):
    with pg_store.transaction():
        level = pg_store._one("SHOW transaction_isolation")["transaction_isolation"]
        inside = pg_store._one("SELECT pg_backend_pid() AS p")["p"]
        assert pg_store._one("SELECT pg_backend_pid() AS p")["p"] == inside  # one connection
        assert pg_store.in_transaction
    assert level == "read committed"
    assert not pg_store.in_transaction
    with pytest.raises(AttributeError):
        _ = pg_store.conn


def test_postgresql_errors_are_database_errors(pg_store):
    from aliasdb import DatabaseError, DatabaseIntegrityError

    with pytest.raises(DatabaseIntegrityError):  # an unknown seller: the foreign key says no
        pg_store._run(
            "INSERT INTO credentials (seller_id, hash, updated_at) VALUES (?, ?, ?)",
            "nobody", "h", "t")
    with pytest.raises(sqlite3.Error):  # what the CLI and the order import catch
        pg_store._one("SELECT no_such_column FROM sellers")
    with pytest.raises(DatabaseError):
        Store.open("postgresql://nobody@127.0.0.1:1/none")


def test_migrating_nodes_started_at_once(pg_url):
    stores = _at_once(list(range(4)), lambda _: Store.open(pg_url))
    try:
        assert sorted(s.migrated_from for s in stores) == [0, LATEST, LATEST, LATEST]
        versions = stores[0]._all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == list(range(1, LATEST + 1))
    finally:
        for s in stores:
            s.close()


def test_postgresql_write_waiting_for_a_row_lock_gives_up_as_busy(pg_store, pg_url):
    from aliasdb import DatabaseBusy

    pg_store.add_seller("s1", "Shop")
    other = Store.open(pg_url)
    try:
        assert other._one("SHOW lock_timeout")["lock_timeout"] == "5s"  # as SQLite's busy wait
        other._run("SET lock_timeout = 200")  # this test need not wait 5 s
        with pg_store.transaction():
            pg_store.update_seller("s1", name="Renamed")  # holds the row lock
            assert other.find_seller("s1").name == "Shop"  # readers do not wait
            with pytest.raises(DatabaseBusy, match="busy"):
                other.suspend_seller("s1")
        assert other.suspend_seller("s1").suspended  # free again after the commit
    finally:
        other.close()


def test_the_daemon_checkpoints_the_wal_in_a_thread_of_its_own(tmp_path):
    # no commit on the daemon's connection checkpoints (that would stall its event loop);
    # the checkpointer's pass moves every frame into the database file
    store = Store.open(tmp_path / "relay.db")
    checkpointer = store.checkpoint_in_background()
    try:
        assert store.backend.one("PRAGMA wal_autocheckpoint")[0] == 0
        store.ensure_secret()
        for i in range(300):
            store.add_buyer(f"b{i}", f"buyer{i}@mail.example")
        busy, frames, done = checkpointer.checkpoint()
        assert (busy, done) == (0, frames) and frames > 0
    finally:
        checkpointer.stop()
        store.close()
    assert not checkpointer._thread.is_alive()


def test_no_background_checkpoints_without_a_wal_file():
    store = Store.open(":memory:")
    try:
        assert store.checkpoint_in_background() is None
    finally:
        store.close()
