"""The store: every SQL statement of the relay lives in this module.

Two engines, one text per query: SQLite (the embedded default for a single node: one
connection per process, WAL, a busy timeout) and PostgreSQL (several nodes on one
database: a psycopg 3 pool, READ COMMITTED), selected by the target given to ``open``.
The SQL below is the portable subset both accept (see ``aliasdb.dialects``); rows are
read by column name. Callers pass validated values; the store only enforces integrity
(unknown ids raise ``NotFound``).

Nothing read from the database is cached, except the token secret, which never changes:
a strike, a suspension, an opt-out, a revocation or a bounce flag written by one node is
what every node reads for its next message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from aliasdb import migrations
from aliasdb.checkpoint import WalCheckpointer
from aliasdb.dialects import BUSY_TIMEOUT_MS, Backend, connect
from aliasdb.group import GroupCommit
from aliasdb.models import Alias, Buyer, Order, Pair, Recipient, Seller
from aliasdb.tokens import alias_token, new_secret

__all__ = ["BUSY_TIMEOUT_MS", "MESSAGE_COLUMNS", "ORDER_STATUSES", "Conflict", "NotFound", "Store",
           "database_target", "open_store"]

T = TypeVar("T")
ORDER_STATUSES = ("pending", "shipped", "completed", "cancelled")
# what the relay writes of every message it records (Store.add_message), in this order
MESSAGE_COLUMNS = ("id", "ts", "session", "direction", "pair_id", "seller_id", "buyer_id",
                   "decision", "policy", "reason", "smtp_code", "size", "duration_ms",
                   "findings", "rule_ids", "order_id", "auto_reply")


class NotFound(LookupError):
    """An id that names nothing in the store."""


class Conflict(ValueError):
    """An insert that would duplicate an existing row."""


def now_iso() -> str:
    # microseconds, so a strike and a reinstatement in the same second keep their order
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat(
        timespec="seconds")


class Store:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # bound once: a look-up is one call into the driver, as with a bare connection
        self._one = backend.one
        self._all = backend.all
        self._run = backend.run
        self._returning = backend.returning
        self._tuples = backend.tuples
        self._secret: str | None = None
        self._group: GroupCommit | None = None
        self.migrated_from: int | None = None  # the schema version found by ``open``

    @classmethod
    def open(cls, target: str | Path, *, migrate: bool = True) -> Store:
        """The store at an SQLite path, or at a ``postgresql://`` URL; migrated unless told."""
        store = cls(connect(target))
        if migrate:
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
        return store

    @classmethod
    def from_config(cls, config: Any, *, migrate: bool = True) -> Store:
        """The store of a relay Config: ``[database] url`` if set, else ``[database] path``."""
        return cls.open(database_target(config), migrate=migrate)

    def migrate(self) -> tuple[int, int]:
        """Bring the schema up to date: (the version found, the version now)."""
        before, after = migrations.migrate(self.backend)
        if self.migrated_from is None:
            self.migrated_from = before
        return before, after

    def close(self) -> None:
        self.backend.close()

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.backend.name

    @property
    def where(self) -> str:
        """The database, for output: a path, or a URL without its password."""
        return self.backend.where

    @property
    def conn(self) -> Any:
        """The sqlite3 connection (SQLite only: PostgreSQL statements use a pool)."""
        if self.backend.conn is None:
            raise AttributeError("a PostgreSQL store has no single connection")
        return self.backend.conn

    @property
    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.conn)

    def checkpoint_in_background(self) -> WalCheckpointer | None:
        """For the daemon: WAL checkpoints in a thread, none inside a commit on this
        connection (see aliasdb.checkpoint). None where there is no WAL file: PostgreSQL."""
        if self.engine != "sqlite" or self.where == ":memory:":
            return None
        self._run("PRAGMA wal_autocheckpoint = 0")
        return WalCheckpointer(self.where)

    @property
    def in_transaction(self) -> bool:
        return self.backend.in_transaction

    def transaction(self) -> Any:
        """All or nothing; nested calls join the outer transaction.

        SQLite: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock).
        PostgreSQL: BEGIN at READ COMMITTED on one pooled connection; rows are locked
        only where written, so readers (the relay's look-ups) never wait for it.
        """
        return self.backend.transaction()

    async def write_grouped(self, work: Callable[[], T],
                            then: Callable[[], Any] | None = None) -> T:
        """``work`` in one transaction with the other writes queued in this turn of the
        event loop (group commit, see aliasdb.group), then ``then``; resumes after the
        COMMIT. ``work`` makes store calls only, and may run twice: what else its caller
        does with the writes made (a log line) belongs in ``then``, which runs once."""
        if self._group is None:
            self._group = GroupCommit(self.backend)
        return await self._group.run(work, then)

    # -- meta and secret ---------------------------------------------------------------

    def ensure_secret(self) -> bool:
        """Create the token secret if missing; True when it was created (race-free)."""
        return self._returning(
            "INSERT INTO meta (key, value) VALUES ('secret', ?) ON CONFLICT (key) DO NOTHING"
            " RETURNING key", new_secret()) is not None

    @property
    def secret(self) -> str:
        if self._secret is None:
            row = self._one("SELECT value FROM meta WHERE key = 'secret'")
            if row is None:
                raise NotFound("no secret: run `relay init` first")
            self._secret = row["value"]
        return self._secret

    def schema_version(self) -> int:
        return migrations.current_version(self.backend)

    # -- sellers and their authorized senders ------------------------------------------

    def add_seller(self, seller_id: str, name: str, inbox: str | None = None) -> Seller:
        row = self._returning(
            "INSERT INTO sellers (id, name, inbox, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING RETURNING *", seller_id, name, inbox, now_iso())
        if row is None:
            raise Conflict(f"seller {seller_id} exists already")
        return self._seller(row)

    _SELLER_FIELDS = ("name", "inbox", "buyer_messages", "fulfilment")

    def update_seller(self, seller_id: str, **fields: Any) -> Seller:
        changes = {k: v for k, v in fields.items() if v is not None}
        if bad := set(changes) - set(self._SELLER_FIELDS):
            raise ValueError(f"not a seller setting: {', '.join(sorted(bad))}")
        with self.transaction():
            self.seller(seller_id)
            for key, value in changes.items():  # keys come from the allow-list above
                self._run(f"UPDATE sellers SET {key} = ? WHERE id = ?",
                          int(value) if isinstance(value, bool) else value, seller_id)
        return self.seller(seller_id)

    @staticmethod
    def _seller(row: Any) -> Seller:
        return Seller(row["id"], row["name"], row["inbox"], bool(row["buyer_messages"]),
                      row["fulfilment"], _dt(row["suspended_at"]))

    def find_seller(self, seller_id: str) -> Seller | None:
        row = self._one("SELECT * FROM sellers WHERE id = ?", seller_id)
        return None if row is None else self._seller(row)

    def seller(self, seller_id: str) -> Seller:
        found = self.find_seller(seller_id)
        if found is None:
            raise NotFound(f"no seller {seller_id}")
        return found

    def suspend_seller(self, seller_id: str) -> Seller:
        row = self._returning(
            "UPDATE sellers SET suspended_at = COALESCE(suspended_at, ?) WHERE id = ?"
            " RETURNING *", now_iso(), seller_id)
        if row is None:
            raise NotFound(f"no seller {seller_id}")
        return self._seller(row)

    def reinstate_seller(self, seller_id: str) -> Seller:
        """Lift a suspension; strikes before now no longer count towards the next one."""
        row = self._returning(
            "UPDATE sellers SET suspended_at = NULL, reinstated_at = ? WHERE id = ?"
            " RETURNING *", now_iso(), seller_id)
        if row is None:
            raise NotFound(f"no seller {seller_id}")
        return self._seller(row)

    def set_sender(self, seller_id: str, address: str, status: str) -> None:
        with self.transaction():
            self.seller(seller_id)
            self._run(
                "INSERT INTO senders (seller_id, address, status, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (seller_id, address) DO UPDATE SET status = excluded.status,"
                " updated_at = excluded.updated_at",
                seller_id, address, status, now_iso())

    def senders(self, seller_id: str) -> list[dict]:
        self.seller(seller_id)
        return [dict(r) for r in self._all(
            "SELECT address, status, updated_at FROM senders WHERE seller_id = ?"
            " ORDER BY address", seller_id)]

    def sender_addresses(self, seller_id: str) -> list[str]:
        """Every address on file for the seller, blocked ones too (no check that it exists)."""
        return [r["address"] for r in self._all(
            "SELECT address FROM senders WHERE seller_id = ?", seller_id)]

    def enabled_senders(self, seller_id: str) -> frozenset[str]:
        return frozenset(r["address"] for r in self._all(
            "SELECT address FROM senders WHERE seller_id = ? AND status = 'enabled'",
            seller_id))

    def set_password_hash(self, seller_id: str, password_hash: str) -> None:
        with self.transaction():
            self.seller(seller_id)
            self._run(
                "INSERT INTO credentials (seller_id, hash, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (seller_id) DO UPDATE SET hash = excluded.hash,"
                " updated_at = excluded.updated_at", seller_id, password_hash, now_iso())

    def password_hash(self, seller_id: str) -> str | None:
        row = self._one("SELECT hash FROM credentials WHERE seller_id = ?", seller_id)
        return None if row is None else row["hash"]

    # -- buyers ------------------------------------------------------------------------

    def add_buyer(self, buyer_id: str, address: str, name: str | None = None) -> Buyer:
        row = self._returning(
            "INSERT INTO buyers (id, address, name, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING RETURNING *", buyer_id, address, name, now_iso())
        if row is None:
            raise Conflict(f"buyer {buyer_id} exists already")
        return self._buyer(row)

    @staticmethod
    def _buyer(row: Any) -> Buyer:
        return Buyer(row["id"], row["address"], row["name"], row["opted_out_at"] is not None,
                     row["bouncing_since"] is not None)

    def find_buyer(self, buyer_id: str) -> Buyer | None:
        row = self._one("SELECT * FROM buyers WHERE id = ?", buyer_id)
        return None if row is None else self._buyer(row)

    def buyer(self, buyer_id: str) -> Buyer:
        found = self.find_buyer(buyer_id)
        if found is None:
            raise NotFound(f"no buyer {buyer_id}")
        return found

    def set_optout(self, buyer_id: str, opted_out: bool) -> Buyer:
        row = self._returning("UPDATE buyers SET opted_out_at = ? WHERE id = ? RETURNING *",
                              now_iso() if opted_out else None, buyer_id)
        if row is None:
            raise NotFound(f"no buyer {buyer_id}")
        return self._buyer(row)

    # -- pairs and aliases -------------------------------------------------------------

    def pair(self, seller_id: str, buyer_id: str) -> Pair:
        """The pair of a seller and a buyer, created on first use (race-free)."""
        sql = "SELECT id FROM pairs WHERE seller_id = ? AND buyer_id = ?"
        row = self._one(sql, seller_id, buyer_id)
        if row is None:
            with self.transaction():
                self.seller(seller_id)
                self.buyer(buyer_id)
                # another node may insert the same pair now: its row wins, ours is skipped
                self._run("INSERT INTO pairs (seller_id, buyer_id, created_at) VALUES (?, ?, ?)"
                          " ON CONFLICT (seller_id, buyer_id) DO NOTHING",
                          seller_id, buyer_id, now_iso())
                row = self._one(sql, seller_id, buyer_id)
        return Pair(row["id"], seller_id, buyer_id)

    _NEWEST_ALIASES = ("SELECT role, token, revoked_at, generation FROM aliases"
                       " WHERE pair_id = ? ORDER BY generation DESC")

    def _newest_aliases(self, pair_id: int) -> dict[str, Any]:
        newest: dict[str, Any] = {}
        for row in self._all(self._NEWEST_ALIASES, pair_id):
            newest.setdefault(row["role"], row)
        return newest

    # An alias row carries its pair's seller and buyer (schema 5), copied from the pairs row
    # (which never changes them) when the alias is written: the pair id twice as parameters.
    # No pair, no parties: NOT NULL refuses the alias, as the foreign key on pair_id does.
    _PARTIES_OF_PAIR = ("(SELECT seller_id FROM pairs WHERE id = ?),"
                        " (SELECT buyer_id FROM pairs WHERE id = ?)")
    # what an Alias is made of: the RCPT look-up reads it in one probe of the token's B-tree
    _ALIAS_COLUMNS = "token, role, revoked_at, pair_id, seller_id, buyer_id"
    _RESOLVE = f"SELECT {_ALIAS_COLUMNS} FROM aliases WHERE token = ?"

    @staticmethod
    def _alias(row: Any) -> Alias:
        return Alias(row["token"], Pair(row["pair_id"], row["seller_id"], row["buyer_id"]),
                     row["role"], row["revoked_at"] is not None)

    def aliases(self, pair: Pair) -> dict[str, str]:
        """The live token for each side of the pair: {"buyer": token, "seller": token}.

        A side without a live token gets the next generation. The token is a function of
        (pair, role, generation), so two nodes creating it at once write the same primary
        key: one insert wins, the other is skipped, and both answer the same token.
        """
        newest = self._newest_aliases(pair.id)
        if all(role in newest and newest[role]["revoked_at"] is None
               for role in ("buyer", "seller")):
            return {role: newest[role]["token"] for role in ("buyer", "seller")}
        tokens = {}
        with self.transaction():
            newest = self._newest_aliases(pair.id)
            for role in ("buyer", "seller"):
                row = newest.get(role)
                if row is not None and row["revoked_at"] is None:
                    tokens[role] = row["token"]
                    continue
                generation = 0 if row is None else row["generation"] + 1
                token = alias_token(self.secret, pair.id, role, generation)
                self._run(
                    "INSERT INTO aliases (token, pair_id, role, generation, created_at,"
                    f" seller_id, buyer_id) VALUES (?, ?, ?, ?, ?, {self._PARTIES_OF_PAIR})"
                    " ON CONFLICT (token) DO NOTHING",
                    token, pair.id, role, generation, now_iso(), pair.id, pair.id)
                tokens[role] = token
        return tokens

    def resolve_alias(self, token: str) -> Alias | None:
        row = self._one(self._RESOLVE, token)
        return None if row is None else self._alias(row)

    # The RCPT look-up in one statement: the alias by token (one probe, schema 5), the
    # newest token of each side if live (two probes of aliases_pair, for the rewrite), the
    # seller, the buyer, and one row per address the seller has on file (none: one row).
    # recipient() reads the columns by position, in this order.
    _NEWEST_LIVE = ("(SELECT CASE WHEN x.revoked_at IS NULL THEN x.token END FROM aliases x"
                    " WHERE x.pair_id = a.pair_id AND x.role = '{}'"
                    " ORDER BY x.generation DESC LIMIT 1)")
    _RECIPIENT = (
        "SELECT a.token, a.role, a.revoked_at, a.pair_id, a.seller_id, a.buyer_id,"
        f" {_NEWEST_LIVE.format('buyer')} AS buyer_token,"
        f" {_NEWEST_LIVE.format('seller')} AS seller_token,"
        " s.id AS s_id, s.name AS s_name, s.inbox, s.buyer_messages, s.fulfilment,"
        " s.suspended_at, b.id AS b_id, b.address AS b_address, b.name AS b_name,"
        " b.opted_out_at, b.bouncing_since, p.address AS sender, p.status AS sender_status"
        " FROM aliases a LEFT JOIN sellers s ON s.id = a.seller_id"
        " LEFT JOIN buyers b ON b.id = a.buyer_id"
        " LEFT JOIN senders p ON p.seller_id = a.seller_id"
        " WHERE a.token = ?")

    def recipient(self, token: str) -> Recipient | None:
        """An alias with what a message to it needs: its pair's live tokens, the seller
        with every address on file, the buyer and the seller's enabled senders."""
        rows = self._tuples(self._RECIPIENT, token)
        if not rows:
            return None
        (token, role, revoked_at, pair_id, seller_id, buyer_id, buyer_token, seller_token,
         s_id, s_name, inbox, buyer_messages, fulfilment, suspended_at,
         b_id, b_address, b_name, opted_out_at, bouncing_since, _, _) = rows[0]
        tokens = None
        if buyer_token is not None and seller_token is not None:
            tokens = {"buyer": buyer_token, "seller": seller_token}
        alias = Alias(token, Pair(pair_id, seller_id, buyer_id), role, revoked_at is not None,
                      tokens)
        senders = [row[-2:] for row in rows if row[-2] is not None]  # (address, status)
        seller = buyer = None
        if s_id is not None:
            seller = Seller(s_id, s_name, inbox, bool(buyer_messages), fulfilment,
                            _dt(suspended_at), frozenset(a for a, _ in senders))
        if b_id is not None:
            buyer = Buyer(b_id, b_address, b_name, opted_out_at is not None,
                          bouncing_since is not None)
        return Recipient(alias, seller, buyer,
                         frozenset(a for a, status in senders if status == "enabled"))

    def alias_of_pair(self, pair_id: int, role: str) -> Alias | None:
        """The newest alias of one side of a pair, revoked or not."""
        row = self._one(f"SELECT {self._ALIAS_COLUMNS} FROM aliases WHERE pair_id = ?"
                        " AND role = ? ORDER BY generation DESC LIMIT 1", pair_id, role)
        return None if row is None else self._alias(row)

    def revoke_alias(self, token: str) -> Alias:
        row = self._returning(
            "UPDATE aliases SET revoked_at = COALESCE(revoked_at, ?) WHERE token = ?"
            f" RETURNING {self._ALIAS_COLUMNS}", now_iso(), token)
        if row is None:
            raise NotFound(f"no alias {token}")
        return self._alias(row)

    # -- orders ------------------------------------------------------------------------

    _ORDER_VALUES = ("seller_id", "buyer_id", "category", "status", "completed_at")

    def upsert_order(self, order_id: str, seller_id: str, buyer_id: str, *,
                     category: str | None = None, status: str = "pending",
                     completed_at: datetime | None = None) -> str:
        """Insert or update one order; returns "inserted", "updated" or "unchanged"."""
        if status not in ORDER_STATUSES:
            raise ValueError(f"status must be one of {', '.join(ORDER_STATUSES)}")
        with self.transaction():
            self.seller(seller_id)
            self.buyer(buyer_id)
            old = self._one("SELECT seller_id, buyer_id, category, status, completed_at"
                            " FROM orders WHERE id = ?", order_id)
            new = (seller_id, buyer_id, category, status, _iso(completed_at))
            if old is not None and tuple(old[k] for k in self._ORDER_VALUES) == new:
                return "unchanged"
            self._run(
                "INSERT INTO orders (id, seller_id, buyer_id, category, status, completed_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " seller_id = excluded.seller_id, buyer_id = excluded.buyer_id,"
                " category = excluded.category, status = excluded.status,"
                " completed_at = excluded.completed_at, updated_at = excluded.updated_at",
                order_id, *new, now_iso())
            self.pair(seller_id, buyer_id)
        return "inserted" if old is None else "updated"

    @staticmethod
    def _order(row: Any) -> Order:
        return Order(row["id"], row["seller_id"], row["buyer_id"], row["category"],
                     row["status"], _dt(row["completed_at"]))

    def find_order(self, order_id: str) -> Order | None:
        row = self._one("SELECT * FROM orders WHERE id = ?", order_id)
        return None if row is None else self._order(row)

    def orders_of_pair(self, pair: Pair) -> tuple[Order, ...]:
        return tuple(self._order(r) for r in self._all(
            "SELECT * FROM orders WHERE seller_id = ? AND buyer_id = ? ORDER BY id",
            pair.seller_id, pair.buyer_id))

    def orders_and_reviews(self, pair: Pair) -> tuple[tuple[Order, ...], frozenset[str]]:
        """``orders_of_pair`` and, of those, the ids ``review_requested`` names: one statement."""
        rows = self._tuples(
            "SELECT o.id, o.seller_id, o.buyer_id, o.category, o.status, o.completed_at,"
            " EXISTS (SELECT 1 FROM review_requests r WHERE r.order_id = o.id)"
            " FROM orders o WHERE o.seller_id = ? AND o.buyer_id = ? ORDER BY o.id",
            pair.seller_id, pair.buyer_id)
        return (tuple(Order(*row[:5], _dt(row[5])) for row in rows),
                frozenset(row[0] for row in rows if row[6]))

    # -- message records and the threading map -----------------------------------------

    def record_message(self, record: dict) -> None:
        row = dict(record)
        row["findings"] = json.dumps(row.get("findings", []))
        row["rule_ids"] = json.dumps(row.get("rule_ids", []))
        self._run(_insert_messages(tuple(row)), *row.values())

    def add_message(self, row: Sequence[Any]) -> None:
        """``record_message`` for the relay's own records: every value of MESSAGE_COLUMNS,
        in that order, with findings and rule_ids already JSON text."""
        self._run(_INSERT_MESSAGE, *row)

    def _message(self, row: Any) -> dict:
        out = dict(row)
        for hidden in self.backend.hidden_columns:
            out.pop(hidden, None)
        out["findings"] = json.loads(out["findings"])
        out["rule_ids"] = json.loads(out["rule_ids"])
        return out

    def find_message(self, message_id: str) -> dict | None:
        row = self._one("SELECT * FROM messages WHERE id = ?", message_id)
        return None if row is None else self._message(row)

    def list_messages(self, *, seller_id: str | None = None, buyer_id: str | None = None,
                      since: datetime | None = None, limit: int = 100) -> list[dict]:
        where, params = ["1 = 1"], []
        if seller_id is not None:
            where.append("seller_id = ?")
            params.append(seller_id)
        if buyer_id is not None:
            where.append("buyer_id = ?")
            params.append(buyer_id)
        if since is not None:
            where.append("ts >= ?")
            params.append(_iso(since))
        # records of one second (ts has seconds) come newest first, in insertion order
        sql = (f"SELECT * FROM messages WHERE {' AND '.join(where)}"
               f" ORDER BY ts DESC, {self.backend.insertion_order} DESC LIMIT ?")
        return [self._message(r) for r in self._all(sql, *params, limit)]

    def add_thread(self, relay_msgid: str, original_msgid: str, pair: Pair, direction: str,
                   message_id: str) -> None:
        self._run(
            "INSERT INTO threads (relay_msgid, original_msgid, pair_id, direction, message_id,"
            " ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (relay_msgid) DO UPDATE SET"
            " original_msgid = excluded.original_msgid, pair_id = excluded.pair_id,"
            " direction = excluded.direction, message_id = excluded.message_id,"
            " ts = excluded.ts",
            relay_msgid, original_msgid, pair.id, direction, message_id, now_iso())

    def thread_entries(self, pair: Pair, msgids: Iterable[str]) -> list[dict]:
        """Thread-map rows of this pair that mention any of ``msgids`` on either side."""
        ids = list(dict.fromkeys(msgids))
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        return [dict(r) for r in self._all(
            f"SELECT * FROM threads WHERE pair_id = ? AND (relay_msgid IN ({marks})"
            f" OR original_msgid IN ({marks}))", pair.id, *ids, *ids)]

    def mark_bounce(self, message_id: str, kind: str) -> None:
        """Record that a delivered message bounced; a hard bounce wins over a soft one."""
        self._run(
            "UPDATE messages SET bounce = CASE WHEN bounce = 'hard' THEN 'hard' ELSE ? END,"
            " bounced_at = ? WHERE id = ?", kind, now_iso(), message_id)

    def count_hard_bounces(self, buyer_id: str, since: datetime) -> int:
        return self._one(
            "SELECT COUNT(*) AS n FROM messages WHERE buyer_id = ? AND bounce = 'hard'"
            " AND direction = 'seller_to_buyer' AND bounced_at >= ?", buyer_id, _iso(since))["n"]

    def set_bouncing(self, buyer_id: str, bouncing: bool) -> Buyer:
        row = self._returning("UPDATE buyers SET bouncing_since = ? WHERE id = ? RETURNING *",
                              now_iso() if bouncing else None, buyer_id)
        if row is None:
            raise NotFound(f"no buyer {buyer_id}")
        return self._buyer(row)

    def count_auto_replies(self, pair_id: int, direction: str, since: datetime) -> int:
        """Auto-replies forwarded in this conversation since ``since``."""
        return self._one(
            "SELECT COUNT(*) AS n FROM messages WHERE pair_id = ? AND direction = ?"
            " AND auto_reply = 1 AND decision = 'delivered' AND ts >= ?",
            pair_id, direction, _iso(since))["n"]

    # -- strikes, review requests, reports ---------------------------------------------

    def add_strike(self, seller_id: str, reason: str, message_id: str | None = None) -> None:
        self._run("INSERT INTO strikes (seller_id, message_id, reason, ts) VALUES (?, ?, ?, ?)",
                  seller_id, message_id, reason, now_iso())

    def count_strikes(self, seller_id: str, since: datetime) -> int:
        """Strikes since ``since`` that came after the seller's last reinstatement."""
        return self._one(
            "SELECT COUNT(*) AS n FROM strikes s JOIN sellers r ON r.id = s.seller_id"
            " WHERE s.seller_id = ? AND s.ts >= ? AND s.ts > COALESCE(r.reinstated_at, '')",
            seller_id, _iso(since))["n"]

    def strikes(self, seller_id: str) -> list[dict]:
        return [dict(r) for r in self._all(
            "SELECT message_id, reason, ts FROM strikes WHERE seller_id = ? ORDER BY ts, id",
            seller_id)]

    def add_review_request(self, order_id: str, message_id: str) -> None:
        self._run("INSERT INTO review_requests (order_id, message_id, ts) VALUES (?, ?, ?)"
                  " ON CONFLICT (order_id, message_id) DO NOTHING",
                  order_id, message_id, now_iso())

    def review_requested(self, order_ids: Iterable[str]) -> frozenset[str]:
        ids = list(order_ids)
        if not ids:
            return frozenset()
        marks = ", ".join("?" for _ in ids)
        return frozenset(r["order_id"] for r in self._all(
            f"SELECT DISTINCT order_id FROM review_requests WHERE order_id IN ({marks})", *ids))

    def add_report(self, message_id: str, by: str, reason: str) -> int:
        with self.transaction():
            if self.find_message(message_id) is None:
                raise NotFound(f"no message {message_id}")
            row = self._returning(
                'INSERT INTO reports (message_id, "by", reason, created_at) VALUES (?, ?, ?, ?)'
                " RETURNING id", message_id, by, reason, now_iso())
        return row["id"]

    def list_reports(self, status: str | None = None) -> list[dict]:
        if status is None:
            return [dict(r) for r in self._all("SELECT * FROM reports ORDER BY id")]
        return [dict(r) for r in self._all(
            "SELECT * FROM reports WHERE status = ? ORDER BY id", status)]

    def resolve_report(self, report_id: int, note: str | None = None) -> dict:
        row = self._returning(
            "UPDATE reports SET status = 'resolved', note = ?, resolved_at = ? WHERE id = ?"
            " RETURNING *", note, now_iso(), report_id)
        if row is None:
            raise NotFound(f"no report {report_id}")
        return dict(row)

    def counts(self) -> dict[str, int]:
        tables = ("sellers", "senders", "buyers", "pairs", "aliases", "orders", "messages",
                  "threads", "reports", "strikes")
        return {t: self._one(f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in tables}

    # -- moving a database: every table, as stored (used by `relay db export|import`) ------

    def table_columns(self, table: str) -> list[str]:
        """The columns of a data table, without an engine's own (PostgreSQL's seq)."""
        self._check_table(table)
        return [c for c in self.backend.columns(table) if c not in self.backend.hidden_columns]

    def table_count(self, table: str) -> int:
        self._check_table(table)
        return self._one(f"SELECT COUNT(*) AS n FROM {table}")["n"]

    def dump_table(self, table: str, columns: list[str]) -> Iterator[tuple]:
        """Every row of ``table`` (in insertion order for messages, else by key)."""
        self._check_table(table)
        order = self.backend.insertion_order if table == "messages" else "1"
        if table in migrations.IDENTITY_COLUMNS:
            order = migrations.IDENTITY_COLUMNS[table]
        names = ", ".join(_quote(c) for c in columns)
        for row in self.backend.stream(f"SELECT {names} FROM {table} ORDER BY {order}"):
            yield tuple(row[c] for c in columns)

    def load_rows(self, table: str, columns: list[str], rows: list[tuple]) -> None:
        """Insert rows as they were stored; meta rows replace the ones of the target."""
        self._check_table(table)
        known = set(self.table_columns(table))
        if bad := [c for c in columns if c not in known]:
            raise ValueError(f"table {table} has no column {', '.join(bad)}")
        names = ", ".join(_quote(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        if table == "aliases" and "seller_id" not in columns and "buyer_id" not in columns:
            # an export from before schema 5: each alias gets its pair's parties from the
            # pairs already loaded (they come first), as Store.aliases writes them
            at = columns.index("pair_id")
            names += ", seller_id, buyer_id"
            marks += ", " + self._PARTIES_OF_PAIR
            rows = [(*row, row[at], row[at]) for row in rows]
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        if table == "meta":
            sql += " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        self.backend.many(sql, rows)

    def after_load(self) -> None:
        """New ids (pairs, reports, strikes) continue after the ones that came in."""
        for table, column in migrations.IDENTITY_COLUMNS.items():
            self.backend.reset_identity(table, column)

    def snapshot(self) -> Any:
        """One consistent read of the whole database, writers carrying on meanwhile."""
        return self.backend.snapshot()

    @staticmethod
    def _check_table(table: str) -> None:
        if table not in migrations.TABLES:
            raise ValueError(f"not a table of the relay: {table}")


@lru_cache(maxsize=64)
def _insert_messages(columns: tuple[str, ...]) -> str:
    # records of one caller always have the same keys: one text, built once
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO messages ({', '.join(columns)}) VALUES ({marks})"


_INSERT_MESSAGE = _insert_messages(MESSAGE_COLUMNS)


def _quote(column: str) -> str:
    if not column.replace("_", "").isalnum():
        raise ValueError(f"not a column name: {column!r}")
    return f'"{column}"'


def database_target(config: Any) -> str | Path:
    """``[database] url`` when set (PostgreSQL), else ``[database] path`` (SQLite)."""
    url = getattr(config, "database_url", "") or ""
    return url if url else config.database_path


def open_store(target: str | Path | Any, *, migrate: bool = True) -> Store:
    """``Store.open`` for a path or URL, or ``Store.from_config`` for a relay Config."""
    if isinstance(target, (str, Path)):
        return Store.open(target, migrate=migrate)
    return Store.from_config(target, migrate=migrate)
