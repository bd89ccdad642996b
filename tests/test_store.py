"""The store against a real SQLite file: integrity, aliases, orders, strikes, records."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

import aliasdb.store as store_module
from aliasdb.migrations import MIGRATIONS
from aliasdb.store import Conflict, NotFound, Store

TOKEN_RE = re.compile(r"[a-z2-7]{20}")


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(tmp_path / "relay.db")
    s.ensure_secret()
    yield s
    s.close()


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


def test_open_migrates_and_uses_wal(tmp_path):
    s = Store.open(tmp_path / "sub" / "relay.db")
    assert s.schema_version() == len(MIGRATIONS)
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    again = Store.open(tmp_path / "sub" / "relay.db")  # re-open: migrations are not re-run
    assert again.schema_version() == len(MIGRATIONS)
    again.close()


def test_secret_is_created_once(tmp_path):
    s = Store.open(tmp_path / "relay.db")
    with pytest.raises(NotFound):
        _ = s.secret
    assert s.ensure_secret() is True
    first = s.secret
    assert s.ensure_secret() is False
    s.close()
    assert Store.open(tmp_path / "relay.db").secret == first


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


def test_aliases_stable_per_pair(store, tmp_path):
    _people(store)
    pair = store.pair("s1", "b1")
    assert store.pair("s1", "b1") == pair
    first = store.aliases(pair)
    assert set(first) == {"buyer", "seller"}
    assert all(TOKEN_RE.fullmatch(t) for t in first.values())
    assert first["buyer"] != first["seller"]
    assert store.aliases(pair) == first
    store.close()
    assert Store.open(tmp_path / "relay.db").aliases(pair) == first


def test_aliases_unlinkable_across_pairs(store):
    _people(store)
    tokens = [store.aliases(store.pair(s, b)) for s in ("s1", "s2") for b in ("b1", "b2")]
    every = [t for pair in tokens for t in pair.values()]
    assert len(set(every)) == len(every) == 8
    # the same buyer behind two sellers gets two unrelated buyer aliases
    assert tokens[0]["buyer"] != tokens[2]["buyer"]


def test_alias_tokens_depend_on_the_secret(tmp_path):
    found = []
    for name in ("one.db", "two.db"):
        s = Store.open(tmp_path / name)
        s.ensure_secret()
        _people(s)
        found.append(s.aliases(s.pair("s1", "b1")))
        s.close()
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
    assert not store.conn.in_transaction


def test_transaction_commits(store):
    with store.transaction():
        store.add_seller("s1", "Shop")
        store.add_buyer("b1", "jane@buyer.example")
    assert store.counts()["sellers"] == store.counts()["buyers"] == 1
