"""Versioned schema. Append a migration; never edit one that has shipped."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sellers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        inbox TEXT,
        buyer_messages INTEGER NOT NULL DEFAULT 0,
        fulfilment TEXT NOT NULL DEFAULT 'seller',
        suspended_at TEXT,
        reinstated_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE senders (
        seller_id TEXT NOT NULL REFERENCES sellers(id),
        address TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('enabled', 'blocked')),
        updated_at TEXT NOT NULL,
        PRIMARY KEY (seller_id, address)
    );
    CREATE INDEX senders_address ON senders(address);
    CREATE TABLE buyers (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        name TEXT,
        opted_out_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX buyers_address ON buyers(address);
    CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        seller_id TEXT NOT NULL REFERENCES sellers(id),
        buyer_id TEXT NOT NULL REFERENCES buyers(id),
        created_at TEXT NOT NULL,
        UNIQUE (seller_id, buyer_id)
    );
    CREATE TABLE aliases (
        token TEXT PRIMARY KEY,
        pair_id INTEGER NOT NULL REFERENCES pairs(id),
        role TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
        generation INTEGER NOT NULL,
        revoked_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX aliases_pair ON aliases(pair_id, role, generation);
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        seller_id TEXT NOT NULL REFERENCES sellers(id),
        buyer_id TEXT NOT NULL REFERENCES buyers(id),
        category TEXT,
        status TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'completed', 'cancelled')),
        completed_at TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX orders_pair ON orders(seller_id, buyer_id);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        ts TEXT NOT NULL,
        session TEXT,
        direction TEXT,
        pair_id INTEGER,
        seller_id TEXT,
        buyer_id TEXT,
        decision TEXT NOT NULL,
        policy TEXT,
        reason TEXT,
        smtp_code INTEGER,
        size INTEGER,
        duration_ms REAL,
        findings TEXT NOT NULL DEFAULT '[]',
        rule_ids TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX messages_seller ON messages(seller_id, ts);
    CREATE INDEX messages_buyer ON messages(buyer_id, ts);
    CREATE INDEX messages_ts ON messages(ts);
    CREATE TABLE threads (
        relay_msgid TEXT PRIMARY KEY,
        original_msgid TEXT NOT NULL,
        pair_id INTEGER NOT NULL,
        direction TEXT NOT NULL,
        message_id TEXT NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE INDEX threads_original ON threads(original_msgid, pair_id);
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id),
        by TEXT NOT NULL CHECK (by IN ('buyer', 'seller')),
        reason TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        note TEXT,
        created_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE TABLE strikes (
        id INTEGER PRIMARY KEY,
        seller_id TEXT NOT NULL REFERENCES sellers(id),
        message_id TEXT,
        reason TEXT NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE INDEX strikes_seller ON strikes(seller_id, ts);
    CREATE TABLE review_requests (
        order_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (order_id, message_id)
    );
    """,
    # 2: submission-port credentials (scrypt hashes, never the password)
    """
    CREATE TABLE credentials (
        seller_id TEXT PRIMARY KEY REFERENCES sellers(id),
        hash TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 3: bounces and auto-replies
    """
    ALTER TABLE messages ADD COLUMN order_id TEXT;
    ALTER TABLE messages ADD COLUMN auto_reply INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN bounce TEXT;
    ALTER TABLE messages ADD COLUMN bounced_at TEXT;
    ALTER TABLE buyers ADD COLUMN bouncing_since TEXT;
    CREATE INDEX messages_pair_auto ON messages(pair_id, direction, auto_reply, ts);
    CREATE INDEX messages_buyer_bounce ON messages(buyer_id, bounce, bounced_at);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version now in force."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; the version bump rides in the same script
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
