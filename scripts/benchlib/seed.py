"""Seeding a relay database fast: direct batched SQL through the Store's own connection.

The rows match aliasdb/migrations.py; alias tokens come from aliasdb.tokens.alias_token
with the database's own secret, so the relay resolves them exactly as if `relay alias show`
had issued them (generation 0, not revoked). `Store.aliases(store.pair(...))` would do the
same one pair per transaction, far too slowly for a million pairs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from collections.abc import Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from aliasdb import Store
from aliasdb.store import now_iso
from aliasdb.tokens import alias_token

BATCH = 50_000
PAIRS_PER_SELLER = 100
ALIAS_DOMAIN = "relay.example"


@dataclass(frozen=True)
class PairInfo:
    """What the load generator needs to write one realistic seller -> buyer message."""

    pair_id: int
    sender: str  # the seller's enabled From / envelope address
    seller_name: str
    alias: str  # the buyer alias address
    order_id: str


def seller_index(pair_index: int, sellers: int) -> int:
    return pair_index % sellers


def order_id(pair_index: int) -> str:
    # the marketplace format the order_reference policy looks for: 3-7-7 digits
    return f"{100 + pair_index % 900:03d}-{pair_index:07d}-{(pair_index * 7919) % 10**7:07d}"


def sender_of(seller: int) -> str:
    return f"shop@seller{seller}.example"


def _batched(rows: Iterator[tuple], size: int = BATCH) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def seed(db_path: Path, pairs: int, *, orders: bool = True) -> str:
    """Fill an initialised (migrated, with secret) database with ``pairs`` pairs.

    One seller per PAIRS_PER_SELLER pairs with one enabled sender address, one buyer per
    pair, both aliases of every pair and (with ``orders``) one shipped order per pair.
    Returns the database's secret.
    """
    store = Store.open(db_path)
    try:
        store.ensure_secret()
        secret = store.secret
        conn = store.conn
        conn.execute("PRAGMA foreign_keys = OFF")  # every reference below is made valid
        conn.execute("PRAGMA journal_mode = OFF")  # a scratch database: no WAL copy
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1048576")  # 1 GiB while building
        sellers = max(1, pairs // PAIRS_PER_SELLER)
        ts = now_iso()
        inserts = [
            ("INSERT INTO sellers (id, name, inbox, buyer_messages, created_at)"
             " VALUES (?, ?, ?, 1, ?)",
             ((f"s{i}", f"Hollow Oak Woodcraft {i}", f"orders@seller{i}.example", ts)
              for i in range(sellers))),
            ("INSERT INTO senders (seller_id, address, status, updated_at)"
             " VALUES (?, ?, 'enabled', ?)",
             ((f"s{i}", sender_of(i), ts) for i in range(sellers))),
            ("INSERT INTO buyers (id, address, name, created_at) VALUES (?, ?, ?, ?)",
             ((f"b{j}", f"buyer{j}@mail{j % 97}.example", f"Buyer {j}", ts)
              for j in range(pairs))),
            ("INSERT INTO pairs (id, seller_id, buyer_id, created_at) VALUES (?, ?, ?, ?)",
             ((j + 1, f"s{seller_index(j, sellers)}", f"b{j}", ts) for j in range(pairs))),
            # in token order: the primary-key index then grows at its end instead of
            # at random places, which makes a million pairs about 3x faster to load
            ("INSERT INTO aliases (token, pair_id, role, seller_id, buyer_id, generation,"
             " created_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
             ((*row, ts) for row in alias_records(secret, pairs))),
        ]
        if orders:
            inserts.append((
                "INSERT INTO orders (id, seller_id, buyer_id, category, status, updated_at)"
                " VALUES (?, ?, ?, 'home', 'shipped', ?)",
                ((order_id(j), f"s{seller_index(j, sellers)}", f"b{j}", ts)
                 for j in range(pairs))))
        for sql, rows in inserts:
            table = sql.split()[2]
            # secondary indexes are built after the load, in one sorted pass (the same
            # CREATE INDEX statements the migrations made, read back from the schema)
            indexes = [r[0] for r in conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                " AND sql IS NOT NULL", (table,))]
            for index_sql in indexes:
                conn.execute("DROP INDEX " + index_sql.split()[2])
            for batch in _batched(rows):
                with store.transaction():
                    conn.executemany(sql, batch)
            for index_sql in indexes:
                conn.execute(index_sql)
        conn.execute("PRAGMA journal_mode = WAL")  # as the relay runs it
        return secret
    finally:
        store.close()


def token_maker(secret: str):
    """alias_token(secret, pair_id, role, 0), with the HMAC key set up once (checked)."""
    base = hmac.new(bytes.fromhex(secret), digestmod=hashlib.sha256)
    b32 = base64.b32encode

    def token(pair_id: int, role: str) -> str:
        mac = base.copy()
        mac.update(f"alias:{pair_id}:{role}:0".encode())
        # base32 works in 5-byte groups: 15 bytes give the same first 20 characters
        return b32(mac.digest()[:15])[:20].decode().lower()

    for pair_id in (1, 2, 12345):
        for role in ("buyer", "seller"):
            assert token(pair_id, role) == alias_token(secret, pair_id, role, 0)
    return token


def alias_rows(secret: str, pairs: int) -> list[tuple[str, int, str]]:
    """Every alias row of ``pairs`` pairs, sorted by token."""
    token = token_maker(secret)
    rows = [(token(pair_id, role), pair_id, role)
            for pair_id in range(1, pairs + 1) for role in ("buyer", "seller")]
    rows.sort(key=itemgetter(0))
    return rows


def alias_records(secret: str, pairs: int) -> Iterator[tuple[str, int, str, str, str]]:
    """alias_rows with the seller and buyer ids of each alias's pair, which an alias row
    carries since schema 5: (token, pair_id, role, seller_id, buyer_id), by token."""
    sellers = max(1, pairs // PAIRS_PER_SELLER)
    for token, pair_id, role in alias_rows(secret, pairs):
        yield token, pair_id, role, f"s{seller_index(pair_id - 1, sellers)}", f"b{pair_id - 1}"


def pair_infos(secret: str, pairs: int, count: int, rng: random.Random) -> list[PairInfo]:
    """``count`` distinct pairs drawn at random from the seeded ones (for the load)."""
    sellers = max(1, pairs // PAIRS_PER_SELLER)
    out = []
    for j in rng.sample(range(pairs), min(count, pairs)):
        seller = seller_index(j, sellers)
        token = alias_token(secret, j + 1, "buyer", 0)
        out.append(PairInfo(j + 1, sender_of(seller), f"Hollow Oak Woodcraft {seller}",
                            f"{token}@{ALIAS_DOMAIN}", order_id(j)))
    return out


def lookup_tokens(secret: str, pairs: int, count: int, rng: random.Random) -> list[str]:
    """Tokens of random existing aliases (both roles), drawn with replacement."""
    return [alias_token(secret, rng.randrange(pairs) + 1, rng.choice(("buyer", "seller")), 0)
            for _ in range(count)]
