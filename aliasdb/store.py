"""The store: every SQL statement of the relay lives in this module.

One connection per process, WAL so the daemon and the CLI can work side by side, and a
busy timeout so a short lock waits instead of failing. Callers pass validated values;
the store only enforces integrity (unknown ids raise ``NotFound``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from aliasdb.migrations import migrate
from aliasdb.models import Alias, Buyer, Order, Pair, Seller
from aliasdb.tokens import alias_token, new_secret

BUSY_TIMEOUT_MS = 5000
ORDER_STATUSES = ("pending", "shipped", "completed", "cancelled")


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
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._secret: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    @property
    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.conn)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _one(self, sql: str, *params: Any) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def _all(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    # -- meta and secret ---------------------------------------------------------------

    def ensure_secret(self) -> bool:
        """Create the token secret if missing; True when it was created."""
        with self.transaction():
            if self._one("SELECT 1 FROM meta WHERE key = 'secret'"):
                return False
            self.conn.execute("INSERT INTO meta (key, value) VALUES ('secret', ?)",
                              (new_secret(),))
            return True

    @property
    def secret(self) -> str:
        if self._secret is None:
            row = self._one("SELECT value FROM meta WHERE key = 'secret'")
            if row is None:
                raise NotFound("no secret: run `relay init` first")
            self._secret = row["value"]
        return self._secret

    def schema_version(self) -> int:
        return self._one("PRAGMA user_version")[0]

    # -- sellers and their authorized senders ------------------------------------------

    def add_seller(self, seller_id: str, name: str, inbox: str | None = None) -> Seller:
        with self.transaction():
            if self._one("SELECT 1 FROM sellers WHERE id = ?", seller_id):
                raise Conflict(f"seller {seller_id} exists already")
            self.conn.execute(
                "INSERT INTO sellers (id, name, inbox, created_at) VALUES (?, ?, ?, ?)",
                (seller_id, name, inbox, now_iso()))
        return self.seller(seller_id)

    _SELLER_FIELDS = ("name", "inbox", "buyer_messages", "fulfilment")

    def update_seller(self, seller_id: str, **fields: Any) -> Seller:
        changes = {k: v for k, v in fields.items() if v is not None}
        if bad := set(changes) - set(self._SELLER_FIELDS):
            raise ValueError(f"not a seller setting: {', '.join(sorted(bad))}")
        with self.transaction():
            self.seller(seller_id)
            for key, value in changes.items():  # keys come from the allow-list above
                self.conn.execute(f"UPDATE sellers SET {key} = ? WHERE id = ?",
                                  (int(value) if isinstance(value, bool) else value, seller_id))
        return self.seller(seller_id)

    def find_seller(self, seller_id: str) -> Seller | None:
        row = self._one("SELECT * FROM sellers WHERE id = ?", seller_id)
        if row is None:
            return None
        return Seller(row["id"], row["name"], row["inbox"], bool(row["buyer_messages"]),
                      row["fulfilment"], _dt(row["suspended_at"]))

    def seller(self, seller_id: str) -> Seller:
        found = self.find_seller(seller_id)
        if found is None:
            raise NotFound(f"no seller {seller_id}")
        return found

    def suspend_seller(self, seller_id: str) -> Seller:
        with self.transaction():
            self.seller(seller_id)
            self.conn.execute(
                "UPDATE sellers SET suspended_at = COALESCE(suspended_at, ?) WHERE id = ?",
                (now_iso(), seller_id))
        return self.seller(seller_id)

    def reinstate_seller(self, seller_id: str) -> Seller:
        """Lift a suspension; strikes before now no longer count towards the next one."""
        with self.transaction():
            self.seller(seller_id)
            self.conn.execute(
                "UPDATE sellers SET suspended_at = NULL, reinstated_at = ? WHERE id = ?",
                (now_iso(), seller_id))
        return self.seller(seller_id)

    def set_sender(self, seller_id: str, address: str, status: str) -> None:
        with self.transaction():
            self.seller(seller_id)
            self.conn.execute(
                "INSERT INTO senders (seller_id, address, status, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (seller_id, address) DO UPDATE SET status = excluded.status,"
                " updated_at = excluded.updated_at",
                (seller_id, address, status, now_iso()))

    def senders(self, seller_id: str) -> list[dict]:
        self.seller(seller_id)
        return [dict(r) for r in self._all(
            "SELECT address, status, updated_at FROM senders WHERE seller_id = ?"
            " ORDER BY address", seller_id)]

    def enabled_senders(self, seller_id: str) -> frozenset[str]:
        return frozenset(r[0] for r in self._all(
            "SELECT address FROM senders WHERE seller_id = ? AND status = 'enabled'", seller_id))

    def set_password_hash(self, seller_id: str, password_hash: str) -> None:
        with self.transaction():
            self.seller(seller_id)
            self.conn.execute(
                "INSERT INTO credentials (seller_id, hash, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (seller_id) DO UPDATE SET hash = excluded.hash,"
                " updated_at = excluded.updated_at", (seller_id, password_hash, now_iso()))

    def password_hash(self, seller_id: str) -> str | None:
        row = self._one("SELECT hash FROM credentials WHERE seller_id = ?", seller_id)
        return None if row is None else row["hash"]

    # -- buyers ------------------------------------------------------------------------

    def add_buyer(self, buyer_id: str, address: str, name: str | None = None) -> Buyer:
        with self.transaction():
            if self._one("SELECT 1 FROM buyers WHERE id = ?", buyer_id):
                raise Conflict(f"buyer {buyer_id} exists already")
            self.conn.execute(
                "INSERT INTO buyers (id, address, name, created_at) VALUES (?, ?, ?, ?)",
                (buyer_id, address, name, now_iso()))
        return self.buyer(buyer_id)

    def find_buyer(self, buyer_id: str) -> Buyer | None:
        row = self._one("SELECT * FROM buyers WHERE id = ?", buyer_id)
        if row is None:
            return None
        return Buyer(row["id"], row["address"], row["name"], row["opted_out_at"] is not None,
                     row["bouncing_since"] is not None)

    def buyer(self, buyer_id: str) -> Buyer:
        found = self.find_buyer(buyer_id)
        if found is None:
            raise NotFound(f"no buyer {buyer_id}")
        return found

    def set_optout(self, buyer_id: str, opted_out: bool) -> Buyer:
        with self.transaction():
            self.buyer(buyer_id)
            self.conn.execute("UPDATE buyers SET opted_out_at = ? WHERE id = ?",
                              (now_iso() if opted_out else None, buyer_id))
        return self.buyer(buyer_id)

    # -- pairs and aliases -------------------------------------------------------------

    def pair(self, seller_id: str, buyer_id: str) -> Pair:
        """The pair of a seller and a buyer, created on first use."""
        with self.transaction():
            self.seller(seller_id)
            self.buyer(buyer_id)
            self.conn.execute(
                "INSERT OR IGNORE INTO pairs (seller_id, buyer_id, created_at) VALUES (?, ?, ?)",
                (seller_id, buyer_id, now_iso()))
            row = self._one("SELECT id FROM pairs WHERE seller_id = ? AND buyer_id = ?",
                            seller_id, buyer_id)
        return Pair(row["id"], seller_id, buyer_id)

    def aliases(self, pair: Pair) -> dict[str, str]:
        """The live token for each side of the pair: {"buyer": token, "seller": token}."""
        tokens = {}
        with self.transaction():
            for role in ("buyer", "seller"):
                row = self._one(
                    "SELECT token, revoked_at, generation FROM aliases WHERE pair_id = ?"
                    " AND role = ? ORDER BY generation DESC LIMIT 1", pair.id, role)
                if row is not None and row["revoked_at"] is None:
                    tokens[role] = row["token"]
                    continue
                generation = 0 if row is None else row["generation"] + 1
                token = alias_token(self.secret, pair.id, role, generation)
                self.conn.execute(
                    "INSERT INTO aliases (token, pair_id, role, generation, created_at)"
                    " VALUES (?, ?, ?, ?, ?)", (token, pair.id, role, generation, now_iso()))
                tokens[role] = token
        return tokens

    def resolve_alias(self, token: str) -> Alias | None:
        row = self._one(
            "SELECT a.token, a.role, a.revoked_at, p.id, p.seller_id, p.buyer_id"
            " FROM aliases a JOIN pairs p ON p.id = a.pair_id WHERE a.token = ?", token)
        if row is None:
            return None
        return Alias(row["token"], Pair(row["id"], row["seller_id"], row["buyer_id"]),
                     row["role"], row["revoked_at"] is not None)

    def alias_of_pair(self, pair_id: int, role: str) -> Alias | None:
        """The newest alias of one side of a pair, revoked or not."""
        row = self._one("SELECT token FROM aliases WHERE pair_id = ? AND role = ?"
                        " ORDER BY generation DESC LIMIT 1", pair_id, role)
        return None if row is None else self.resolve_alias(row["token"])

    def revoke_alias(self, token: str) -> Alias:
        with self.transaction():
            if self.resolve_alias(token) is None:
                raise NotFound(f"no alias {token}")
            self.conn.execute(
                "UPDATE aliases SET revoked_at = COALESCE(revoked_at, ?) WHERE token = ?",
                (now_iso(), token))
        return self.resolve_alias(token)

    # -- orders ------------------------------------------------------------------------

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
            if old is not None and tuple(old) == new:
                return "unchanged"
            self.conn.execute(
                "INSERT INTO orders (id, seller_id, buyer_id, category, status, completed_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " seller_id = excluded.seller_id, buyer_id = excluded.buyer_id,"
                " category = excluded.category, status = excluded.status,"
                " completed_at = excluded.completed_at, updated_at = excluded.updated_at",
                (order_id, *new, now_iso()))
            self.pair(seller_id, buyer_id)
        return "inserted" if old is None else "updated"

    @staticmethod
    def _order(row: sqlite3.Row) -> Order:
        return Order(row["id"], row["seller_id"], row["buyer_id"], row["category"],
                     row["status"], _dt(row["completed_at"]))

    def find_order(self, order_id: str) -> Order | None:
        row = self._one("SELECT * FROM orders WHERE id = ?", order_id)
        return None if row is None else self._order(row)

    def orders_of_pair(self, pair: Pair) -> tuple[Order, ...]:
        return tuple(self._order(r) for r in self._all(
            "SELECT * FROM orders WHERE seller_id = ? AND buyer_id = ? ORDER BY id",
            pair.seller_id, pair.buyer_id))

    # -- message records and the threading map -----------------------------------------

    def record_message(self, record: dict) -> None:
        row = dict(record)
        row["findings"] = json.dumps(row.get("findings", []))
        row["rule_ids"] = json.dumps(row.get("rule_ids", []))
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction():
            self.conn.execute(f"INSERT INTO messages ({columns}) VALUES ({marks})",
                              tuple(row.values()))

    @staticmethod
    def _message(row: sqlite3.Row) -> dict:
        out = dict(row)
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
        sql = (f"SELECT * FROM messages WHERE {' AND '.join(where)}"
               " ORDER BY ts DESC, rowid DESC LIMIT ?")
        return [self._message(r) for r in self._all(sql, *params, limit)]

    def add_thread(self, relay_msgid: str, original_msgid: str, pair: Pair, direction: str,
                   message_id: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO threads (relay_msgid, original_msgid, pair_id,"
                " direction, message_id, ts) VALUES (?, ?, ?, ?, ?, ?)",
                (relay_msgid, original_msgid, pair.id, direction, message_id, now_iso()))

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
        with self.transaction():
            self.conn.execute(
                "UPDATE messages SET bounce = CASE WHEN bounce = 'hard' THEN 'hard' ELSE ? END,"
                " bounced_at = ? WHERE id = ?", (kind, now_iso(), message_id))

    def count_hard_bounces(self, buyer_id: str, since: datetime) -> int:
        return self._one(
            "SELECT COUNT(*) FROM messages WHERE buyer_id = ? AND bounce = 'hard'"
            " AND direction = 'seller_to_buyer' AND bounced_at >= ?", buyer_id, _iso(since))[0]

    def set_bouncing(self, buyer_id: str, bouncing: bool) -> Buyer:
        with self.transaction():
            self.buyer(buyer_id)
            self.conn.execute(
                "UPDATE buyers SET bouncing_since = ? WHERE id = ?",
                (now_iso() if bouncing else None, buyer_id))
        return self.buyer(buyer_id)

    def count_auto_replies(self, pair_id: int, direction: str, since: datetime) -> int:
        """Auto-replies forwarded in this conversation since ``since``."""
        return self._one(
            "SELECT COUNT(*) FROM messages WHERE pair_id = ? AND direction = ? AND auto_reply = 1"
            " AND decision = 'delivered' AND ts >= ?", pair_id, direction, _iso(since))[0]

    # -- strikes, review requests, reports ---------------------------------------------

    def add_strike(self, seller_id: str, reason: str, message_id: str | None = None) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO strikes (seller_id, message_id, reason, ts) VALUES (?, ?, ?, ?)",
                (seller_id, message_id, reason, now_iso()))

    def count_strikes(self, seller_id: str, since: datetime) -> int:
        """Strikes since ``since`` that came after the seller's last reinstatement."""
        return self._one(
            "SELECT COUNT(*) FROM strikes s JOIN sellers r ON r.id = s.seller_id"
            " WHERE s.seller_id = ? AND s.ts >= ? AND s.ts > COALESCE(r.reinstated_at, '')",
            seller_id, _iso(since))[0]

    def strikes(self, seller_id: str) -> list[dict]:
        return [dict(r) for r in self._all(
            "SELECT message_id, reason, ts FROM strikes WHERE seller_id = ? ORDER BY ts, id",
            seller_id)]

    def add_review_request(self, order_id: str, message_id: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR IGNORE INTO review_requests (order_id, message_id, ts)"
                " VALUES (?, ?, ?)", (order_id, message_id, now_iso()))

    def review_requested(self, order_ids: Iterable[str]) -> frozenset[str]:
        ids = list(order_ids)
        if not ids:
            return frozenset()
        marks = ", ".join("?" for _ in ids)
        return frozenset(r[0] for r in self._all(
            f"SELECT DISTINCT order_id FROM review_requests WHERE order_id IN ({marks})", *ids))

    def add_report(self, message_id: str, by: str, reason: str) -> int:
        with self.transaction():
            if self.find_message(message_id) is None:
                raise NotFound(f"no message {message_id}")
            cur = self.conn.execute(
                "INSERT INTO reports (message_id, by, reason, created_at) VALUES (?, ?, ?, ?)",
                (message_id, by, reason, now_iso()))
        return cur.lastrowid

    def list_reports(self, status: str | None = None) -> list[dict]:
        if status is None:
            return [dict(r) for r in self._all("SELECT * FROM reports ORDER BY id")]
        return [dict(r) for r in self._all(
            "SELECT * FROM reports WHERE status = ? ORDER BY id", status)]

    def resolve_report(self, report_id: int, note: str | None = None) -> dict:
        with self.transaction():
            if self._one("SELECT 1 FROM reports WHERE id = ?", report_id) is None:
                raise NotFound(f"no report {report_id}")
            self.conn.execute(
                "UPDATE reports SET status = 'resolved', note = ?, resolved_at = ? WHERE id = ?",
                (note, now_iso(), report_id))
        return dict(self._one("SELECT * FROM reports WHERE id = ?", report_id))

    def counts(self) -> dict[str, int]:
        tables = ("sellers", "senders", "buyers", "pairs", "aliases", "orders", "messages",
                  "threads", "reports", "strikes")
        return {t: self._one(f"SELECT COUNT(*) FROM {t}")[0] for t in tables}
