"""The relay on PostgreSQL: a scratch database, seeded fast, dropped whatever happens.

`Scratch` creates `relay_bench_<random>` on the server of ``--pg-url`` (a maintenance
database such as `postgres`), hands out its URL and drops it (WITH (FORCE): a relay still
connected cannot keep it alive) on ``drop()``, which the benchmark calls from its
`finally`, so an error or Ctrl-C leaves nothing behind. `seed` fills a database that
`relay init` has migrated and given its secret, with the same rows as benchlib.seed
writes into SQLite, by COPY. `ServerCpu` reads the CPU time of the server's processes
from /proc (the server runs on this machine: the relay's SQLite does its work in the
relay's own process, PostgreSQL's in processes of its own).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from benchlib import procs
from benchlib.seed import PAIRS_PER_SELLER, alias_records, order_id, seller_index, sender_of

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 5  # seconds
STATEMENT_TIMEOUT_MS = 120_000  # every statement of ours (the seeding ones are the longest)


class Unreachable(Exception):
    """No PostgreSQL to run on (server down, refused, psycopg missing...)."""


def _psycopg():
    try:
        import psycopg
    except ImportError as exc:
        raise Unreachable(f"psycopg is not installed: {exc}") from None
    return psycopg


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead (user, host, port, options kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def server_of(url: str) -> str:
    """host:port of ``url``, for output (no user, no password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Scratch:
    """A database of its own on the server at ``admin_url``; ``drop()`` is idempotent."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name: str | None = None  # set before CREATE: an interrupt still drops it
        self.url: str | None = None

    def _admin(self):
        psycopg = _psycopg()
        conn = psycopg.connect(self.admin_url, autocommit=True,
                               connect_timeout=CONNECT_TIMEOUT)
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        return conn

    def create(self) -> str:
        psycopg = _psycopg()
        try:
            conn = self._admin()
        except psycopg.Error as exc:
            raise Unreachable(one_line(exc)) from None
        with conn:
            self.name = f"relay_bench_{secrets.token_hex(6)}"
            conn.execute(f"CREATE DATABASE {self.name}")
        self.url = with_database(self.admin_url, self.name)
        return self.url

    def drop(self) -> str | None:
        """DROP the database if it was made; a problem is returned, not raised."""
        if self.name is None:
            return None
        try:
            with self._admin() as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except Exception as exc:  # the clean-up of a benchmark: say it, do not mask others
            return f"could not drop database {self.name}: {one_line(exc)}"
        self.name = None
        return None


def _copy(cur, sql: str, rows: Iterable[tuple]) -> None:
    with cur.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


def seed(url: str, pairs: int, *, orders: bool = True) -> str:
    """Fill a migrated database (with its secret) as benchlib.seed.seed fills SQLite.

    One transaction of COPYs, secondary indexes and foreign keys dropped first and made
    again after (the very definitions the migrations made, read back from the catalog), then
    the pairs' identity moved past the ids that came in, then VACUUM (ANALYZE) and a
    CHECKPOINT, so that autovacuum and the checkpointer do not catch up on the load during
    the measured windows. Returns the database's secret.
    """
    psycopg = _psycopg()
    from aliasdb.store import now_iso

    # autocommit: the COPYs have a transaction() of their own, VACUUM may not have one
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
        if row is None:
            raise RuntimeError(f"no secret in {url}: `relay init` did not make one")
        secret = row[0]
        sellers = max(1, pairs // PAIRS_PER_SELLER)
        ts = now_iso()
        loads = [
            ("sellers", "(id, name, inbox, buyer_messages, created_at)",
             ((f"s{i}", f"Hollow Oak Woodcraft {i}", f"orders@seller{i}.example", 1, ts)
              for i in range(sellers))),
            ("senders", "(seller_id, address, status, updated_at)",
             ((f"s{i}", sender_of(i), "enabled", ts) for i in range(sellers))),
            ("buyers", "(id, address, name, created_at)",
             ((f"b{j}", f"buyer{j}@mail{j % 97}.example", f"Buyer {j}", ts)
              for j in range(pairs))),
            ("pairs", "(id, seller_id, buyer_id, created_at)",
             ((j + 1, f"s{seller_index(j, sellers)}", f"b{j}", ts) for j in range(pairs))),
            ("aliases", "(token, pair_id, role, seller_id, buyer_id, generation, created_at)",
             ((*row, 0, ts) for row in alias_records(secret, pairs))),
        ]
        if orders:
            loads.append((
                "orders", "(id, seller_id, buyer_id, category, status, updated_at)",
                ((order_id(j), f"s{seller_index(j, sellers)}", f"b{j}", "home", "shipped", ts)
                 for j in range(pairs))))
        with conn.transaction(), conn.cursor() as cur:
            for table, columns, rows in loads:
                indexes = cur.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s"
                    " AND schemaname = current_schema() AND indexname NOT IN ("
                    "  SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
                    (table, table)).fetchall()
                # foreign keys too: checked once over the whole table when added back,
                # not row by row through their triggers
                foreign = cur.execute(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = %s::regclass AND contype = 'f'", (table,)).fetchall()
                for name, _ in foreign:
                    cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
                for name, _ in indexes:
                    cur.execute(f'DROP INDEX "{name}"')
                _copy(cur, f"COPY {table} {columns} FROM STDIN", rows)
                for _, definition in indexes:
                    cur.execute(definition)
                for name, definition in foreign:
                    cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            cur.execute("SELECT setval(pg_get_serial_sequence('pairs', 'id'),"
                        " (SELECT MAX(id) FROM pairs) + 1, false)")
        # what autovacuum would otherwise do during the measured windows (statistics, the
        # visibility map of freshly loaded tables), and the dirty pages written out now
        for table, _, _ in loads:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
        return secret


class ServerCpu:
    """CPU seconds of a local PostgreSQL server's processes (backends and background
    workers, as pg_stat_activity lists them), summed over every process seen so far.

    A process that exits keeps the last figure read from it, so a pooled connection the
    relay closes in a window is not lost; the postmaster, which only forks, is left out.
    """

    def __init__(self, url: str) -> None:
        psycopg = _psycopg()
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        self.own = self.conn.info.backend_pid  # this monitor's backend is not the server's
        self.last: dict[int, float] = {}
        self.version = str(self.conn.execute("SHOW server_version").fetchone()[0])
        # the server's pids mean something in this /proc only when it runs here
        self.readable = urlsplit(url).hostname in (None, "", "127.0.0.1", "localhost", "::1")

    def read(self) -> float:
        if not self.readable:
            return 0.0
        pids = [r[0] for r in self.conn.execute("SELECT pid FROM pg_stat_activity")]
        for pid in pids:
            if pid == self.own:
                continue
            try:
                self.last[pid] = procs.cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue  # gone between the query and the read: its last figure stays
        return sum(self.last.values())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

