"""The per-message statements of the store, on both engines: the folded look-ups read what
the separate ones read, and the partial indexes (schema 6) still find what they index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from aliasdb import migrations
from aliasdb.store import Store

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_target) -> Iterator[Store]:
    s = Store.open(store_target)
    s.ensure_secret()
    s.add_seller("s1", "Shop One", "inbox@seller.example")
    s.add_seller("s2", "Shop Two")  # no senders, no inbox
    s.add_buyer("b1", "jane@buyer.example", "Jane")
    s.set_sender("s1", "shop@seller.example", "enabled")
    s.set_sender("s1", "old@seller.example", "blocked")
    s.set_sender("s1", "desk@seller.example", "enabled")
    yield s
    s.close()


def _separately(s: Store, token: str) -> tuple:
    """What the RCPT look-up and the rewrite read before they were one statement."""
    alias = s.resolve_alias(token)
    pair = alias.pair
    return (alias, s.find_seller(pair.seller_id), s.find_buyer(pair.buyer_id),
            s.enabled_senders(pair.seller_id), frozenset(s.sender_addresses(pair.seller_id)))


def test_recipient_reads_what_the_separate_look_ups_read(store):
    pair = store.pair("s1", "b1")
    tokens = store.aliases(pair)
    for role in ("buyer", "seller"):
        found = store.recipient(tokens[role])
        alias, seller, buyer, enabled, addresses = _separately(store, tokens[role])
        assert (found.alias, found.seller, found.buyer) == (alias, seller, buyer)
        assert found.enabled_senders == enabled == {"shop@seller.example",
                                                    "desk@seller.example"}
        assert found.seller.addresses == addresses == enabled | {"old@seller.example"}
        assert found.alias.pair_tokens == tokens
        # the extras do not make a record unequal to one read without them
        assert found.alias == store.alias_of_pair(pair.id, role)
        assert found.seller == store.seller("s1")
    assert store.recipient("no-such-token") is None


def test_recipient_of_a_seller_without_senders(store):
    pair = store.pair("s2", "b1")
    found = store.recipient(store.aliases(pair)["seller"])
    assert found.seller == store.seller("s2")
    assert found.seller.addresses == found.enabled_senders == frozenset()
    assert found.buyer == store.buyer("b1")


def test_recipient_leaves_a_revoked_side_to_the_store(store):
    pair = store.pair("s1", "b1")
    tokens = store.aliases(pair)
    store.revoke_alias(tokens["seller"])
    found = store.recipient(tokens["buyer"])
    assert not found.alias.revoked
    assert found.alias.pair_tokens is None  # the rewrite asks store.aliases, which reissues
    fresh = store.aliases(pair)
    assert fresh["buyer"] == tokens["buyer"] and fresh["seller"] != tokens["seller"]
    assert store.recipient(tokens["buyer"]).alias.pair_tokens == fresh
    revoked = store.recipient(tokens["seller"])
    assert revoked.alias.revoked and revoked.alias.pair_tokens == fresh


def test_orders_and_reviews_in_one_statement(store):
    pair = store.pair("s1", "b1")
    assert store.orders_and_reviews(pair) == ((), frozenset())
    for order_id in ("o2", "o1", "o3"):
        store.upsert_order(order_id, "s1", "b1", status="shipped")
    store.upsert_order("o9", "s2", "b1")  # another pair's
    store.add_review_request("o3", "m1")
    store.add_review_request("o3", "m2")
    store.add_review_request("o9", "m3")
    orders, reviewed = store.orders_and_reviews(pair)
    assert orders == store.orders_of_pair(pair)
    assert [o.id for o in orders] == ["o1", "o2", "o3"]
    assert reviewed == store.review_requested(o.id for o in orders) == {"o3"}


def test_recipient_and_orders_read_every_column_in_its_place(store):
    """The per-message look-ups read their rows by position: each value where it belongs,
    with every nullable column set (a suspension, an opt-out, a bounce flag, a completed
    order with a category)."""
    pair = store.pair("s1", "b1")
    tokens = store.aliases(pair)
    store.update_seller("s1", buyer_messages=True, fulfilment="marketplace")
    store.suspend_seller("s1")
    store.set_optout("b1", True)
    store.set_bouncing("b1", True)
    store.upsert_order("o1", "s1", "b1", category="garden", status="completed",
                       completed_at=NOW)
    store.add_review_request("o1", "m1")
    found = store.recipient(tokens["seller"])
    seller, buyer = store.seller("s1"), store.buyer("b1")
    assert found.seller == seller and found.buyer == buyer
    assert (seller.suspended, seller.buyer_messages, seller.fulfilment, seller.inbox) == (
        True, True, "marketplace", "inbox@seller.example")
    assert (buyer.opted_out, buyer.bouncing, buyer.name) == (True, True, "Jane")
    assert found.alias == store.resolve_alias(tokens["seller"])
    assert found.alias.role == "seller" and found.alias.pair == pair
    orders, reviewed = store.orders_and_reviews(pair)
    assert orders == store.orders_of_pair(pair) == (store.find_order("o1"),)
    assert (orders[0].category, orders[0].completed_at) == ("garden", NOW)
    assert reviewed == {"o1"}


def _record(store: Store, message_id: str, ts: datetime, **extra) -> None:
    store.record_message({
        "id": message_id, "ts": ts.isoformat(timespec="seconds"),
        "direction": "seller_to_buyer", "pair_id": 1, "seller_id": "s1", "buyer_id": "b1",
        "decision": "delivered", "smtp_code": 250, **extra})


def test_partial_indexes_count_what_the_full_ones_counted(store):
    since = NOW - timedelta(days=1)
    _record(store, "m1", NOW)
    _record(store, "m2", NOW, auto_reply=1)
    _record(store, "m3", NOW, auto_reply=1, decision="rejected")
    _record(store, "m4", NOW - timedelta(days=2), auto_reply=1)
    _record(store, "m5", NOW, auto_reply=1, direction="buyer_to_seller")
    assert store.count_auto_replies(1, "seller_to_buyer", since) == 1
    assert store.count_auto_replies(1, "buyer_to_seller", since) == 1
    store.mark_bounce("m1", "hard")
    store.mark_bounce("m2", "soft")
    store.mark_bounce("m4", "soft")
    store.mark_bounce("m4", "hard")  # soft, then hard: hard
    store.mark_bounce("m1", "soft")  # hard stays hard
    assert store.find_message("m1")["bounce"] == "hard"
    assert store.count_hard_bounces("b1", NOW - timedelta(days=30)) == 2
    assert store.count_hard_bounces("b2", NOW - timedelta(days=30)) == 0
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert store.count_hard_bounces("b1", later) == 0


def test_sqlite_rare_look_ups_use_their_partial_indexes(tmp_path):
    s = Store.open(tmp_path / "relay.db")
    counts = {
        "messages_pair_auto": "SELECT COUNT(*) AS n FROM messages WHERE pair_id = ? AND"
        " direction = ? AND auto_reply = 1 AND decision = 'delivered' AND ts >= ?",
        "messages_buyer_bounce": "SELECT COUNT(*) AS n FROM messages WHERE buyer_id = ?"
        " AND bounce = 'hard' AND direction = 'seller_to_buyer' AND bounced_at >= ?",
    }
    for index, sql in counts.items():
        params = (1, 2, 3)[:sql.count("?")]
        plan = " ".join(r["detail"] for r in s._all("EXPLAIN QUERY PLAN " + sql, *params))
        assert f"USING INDEX {index}" in plan, plan
        assert " WHERE " in s._one("SELECT sql FROM sqlite_master WHERE name = ?", index)["sql"]
    s.close()


def test_records_from_schema_5_keep_their_counts_through_schema_6(store_target, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(migrations, "LATEST", 5)
        old = Store.open(store_target)
    assert old.schema_version() == 5
    _record(old, "m1", NOW, auto_reply=1)
    _record(old, "m2", NOW)
    old.mark_bounce("m2", "hard")
    old.close()
    s = Store.open(store_target)
    try:
        assert (s.migrated_from, s.schema_version()) == (5, migrations.LATEST)
        assert s.count_auto_replies(1, "seller_to_buyer", NOW - timedelta(days=1)) == 1
        assert s.count_hard_bounces("b1", NOW - timedelta(days=30)) == 1
    finally:
        s.close()
