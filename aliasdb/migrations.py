"""Versioned schema, one list for both engines. Append a migration; never edit one that
has shipped (a change of wording that gives the same schema, such as quoting ``"by"``, which
PostgreSQL reserves, is not an edit).

A migration is either one script both engines run (PostgreSQL gets its own types for the
few that differ: see ``dialects.PostgresBackend.ddl``) or a dict with a script per engine.
The version in force is the highest row of ``schema_migrations``; an SQLite database from
before that table keeps its ``PRAGMA user_version``, which is adopted on first open.
Each migration runs in one transaction with its version row, under a lock, so two nodes
that start at once on one PostgreSQL database do not both migrate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

MIGRATIONS: list[str | dict[str, str]] = [
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
        "by" TEXT NOT NULL CHECK ("by" IN ('buyer', 'seller')),
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
    # 4: messages keep their insertion order on PostgreSQL too (SQLite has its rowid), so
    # records of one second are listed the same way on both engines
    {
        "sqlite": "",
        "postgresql": "ALTER TABLE messages ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY",
    },
    # 5: an alias carries its pair's seller and buyer (a pair never changes them), so the
    # RCPT look-up is one probe by token instead of the token index, the aliases row and
    # the pairs row. On SQLite the table is keyed by token itself (WITHOUT ROWID): the row
    # sits in the token's B-tree, one descent finds everything; rebuilt in token order. On
    # PostgreSQL the token's index leads to the one heap row, which gains the two columns.
    # (LEFT JOIN: an alias without its pair, which the foreign key never let in, stops the
    # migration at NOT NULL instead of vanishing.)
    {
        "sqlite": """
        CREATE TABLE aliases_v5 (
            token TEXT PRIMARY KEY,
            pair_id INTEGER NOT NULL REFERENCES pairs(id),
            role TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
            generation INTEGER NOT NULL,
            revoked_at TEXT,
            created_at TEXT NOT NULL,
            seller_id TEXT NOT NULL,
            buyer_id TEXT NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO aliases_v5 (token, pair_id, role, generation, revoked_at, created_at,
                                seller_id, buyer_id)
            SELECT a.token, a.pair_id, a.role, a.generation, a.revoked_at, a.created_at,
                   p.seller_id, p.buyer_id
            FROM aliases a LEFT JOIN pairs p ON p.id = a.pair_id ORDER BY a.token;
        DROP TABLE aliases;
        ALTER TABLE aliases_v5 RENAME TO aliases;
        CREATE INDEX aliases_pair ON aliases(pair_id, role, generation);
        """,
        "postgresql": """
        ALTER TABLE aliases ADD COLUMN seller_id TEXT;
        ALTER TABLE aliases ADD COLUMN buyer_id TEXT;
        UPDATE aliases SET seller_id = p.seller_id, buyer_id = p.buyer_id
            FROM pairs p WHERE p.id = aliases.pair_id;
        ALTER TABLE aliases ALTER COLUMN seller_id SET NOT NULL,
            ALTER COLUMN buyer_id SET NOT NULL;
        """,
    },
    # 6: the indexes of the two rare look-ups (today's auto-replies of a conversation, a
    # buyer's hard bounces) hold only the rows those look for. An ordinary message is in
    # neither, so its record's commit writes two B-tree pages fewer (~20% of its WAL).
    """
    DROP INDEX messages_pair_auto;
    CREATE INDEX messages_pair_auto ON messages(pair_id, direction, ts) WHERE auto_reply = 1;
    DROP INDEX messages_buyer_bounce;
    CREATE INDEX messages_buyer_bounce ON messages(buyer_id, bounced_at) WHERE bounce = 'hard';
    """,
]

# every table with data, parents before children (the order of an export and an import)
TABLES: tuple[str, ...] = (
    "meta", "sellers", "senders", "credentials", "buyers", "pairs", "aliases", "orders",
    "messages", "threads", "reports", "strikes", "review_requests",
)
IDENTITY_COLUMNS: dict[str, str] = {"pairs": "id", "reports": "id", "strikes": "id"}

VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "version INTEGER NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)")
LATEST = len(MIGRATIONS)


def script_for(migration: str | dict[str, str], engine: str) -> str:
    return migration[engine] if isinstance(migration, dict) else migration


def current_version(backend: Any) -> int:
    """The schema version in force (0: an empty database)."""
    if backend.table_exists("schema_migrations"):
        row = backend.one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        if row["v"]:
            return row["v"]
    return backend.legacy_version()


def migrate(backend: Any) -> tuple[int, int]:
    """Bring the schema up to date; returns (the version before, the version now)."""
    before = current_version(backend)
    if before >= LATEST:
        return before, before
    with backend.transaction():
        backend.lock_for_migration()
        backend.run(VERSION_TABLE)
        # again, under the lock: another node may have migrated while this one waited
        before = version = current_version(backend)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        adopted = backend.one("SELECT COUNT(*) AS n FROM schema_migrations")["n"] == 0
        if adopted and version:  # an SQLite database from before schema_migrations
            for number in range(1, version + 1):
                backend.run("INSERT INTO schema_migrations (version, applied_at)"
                            " VALUES (?, ?)", number, f"{now} (adopted from user_version)")
        for number in range(version + 1, LATEST + 1):
            for statement in backend.ddl(script_for(MIGRATIONS[number - 1], backend.name)):
                backend.run(statement)
            backend.run("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        number, now)
            backend.after_migration(number)
    return before, LATEST
