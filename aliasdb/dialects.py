"""The two engines behind the store, reduced to what really differs between them.

Every query, the migrations and the store's logic are written once (store.py,
migrations.py) in SQL that SQLite (>= 3.35) and PostgreSQL (>= 12) both accept: ``?``
placeholders, ``INSERT ... ON CONFLICT DO NOTHING | DO UPDATE``, ``RETURNING``, COALESCE,
CASE, LIMIT, rows read by column name. A back-end owns what is left:

- connecting (one sqlite3 connection per process; a psycopg 3 pool for PostgreSQL),
- running a statement (``?`` becomes ``%s`` for psycopg, translated once per statement
  text and cached), a write transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``BEGIN``
  at READ COMMITTED on one pooled connection) and a consistent read (for exports),
- the DDL types that differ (identity columns, ``REAL``, byte-wise text collation),
- the few catalogue questions (does a table exist, its columns, the legacy version).

The store binds ``one``, ``all``, ``run``, ``returning`` and ``tuples`` of its back-end
once, so a point look-up on SQLite costs what it cost before there were two engines.
Rows are read by column name, except where ``tuples`` hands them out by position: on
the per-message look-ups, where finding each column by its name costs more than the
query itself.

Errors: PostgreSQL's are re-raised as ``DatabaseError`` and subclasses, which derive from
the matching ``sqlite3`` classes, so a caller's ``except sqlite3.Error`` (the CLI's
one-line errors, the order import) covers both engines.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BUSY_TIMEOUT_MS = 5000
# SQLite reads the database file through a memory map up to this size (capped by the
# build's SQLITE_MAX_MMAP_SIZE, 2 GiB by default): a page read is a memory access instead
# of a read() call and a copy into the page cache. Address space, not memory: the OS
# page cache holds what was touched, shared by every process on the file.
SQLITE_MMAP_BYTES = 1 << 31
# the connection's own page cache (KiB; it grows only as pages are used): the pages the
# memory map does not serve, those in the WAL and those being written
SQLITE_CACHE_KIB = 64 * 1024
URL_SCHEMES = ("postgresql://", "postgres://")
# PostgreSQL pool per process: the relay's store is used from its event-loop thread, so
# one connection does the work; a few more cover the CLI and threads, never a flood.
PG_POOL_MIN = 1
PG_POOL_MAX = 4
PG_CONNECT_TIMEOUT = 10  # seconds, to connect and to wait for a pooled connection
PG_MIGRATION_LOCK = 0x72656C6179  # "relay": one node migrates at a time


class DatabaseError(sqlite3.DatabaseError):
    """A database failure on either engine (PostgreSQL errors are re-raised as these)."""


class DatabaseBusy(DatabaseError, sqlite3.OperationalError):
    """A lock, a serialization conflict or a timeout: the same request may succeed later."""


class DatabaseIntegrityError(DatabaseError, sqlite3.IntegrityError):
    """A constraint said no."""


def is_url(target: str | Path) -> bool:
    return str(target).startswith(URL_SCHEMES)


def redact(target: str | Path) -> str:
    """A database target fit for output and logs: a URL loses its password."""
    text = str(target)
    if not is_url(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def split_script(script: str) -> list[str]:
    """The statements of a DDL script (no ``;`` inside literals in our migrations)."""
    return [s.strip() for s in script.split(";") if s.strip()]


class SQLiteBackend:
    """One sqlite3 connection, WAL, memory-mapped reads, autocommit outside ``transaction()``."""

    name = "sqlite"
    insertion_order = "rowid"  # messages listed newest first, ties in insertion order
    hidden_columns: frozenset[str] = frozenset()

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
        conn.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        self.conn = conn
        self.where = str(path)
        execute = conn.execute

        def one(sql: str, *params: Any) -> sqlite3.Row | None:
            return execute(sql, params).fetchone()

        def all_(sql: str, *params: Any) -> list[sqlite3.Row]:
            return execute(sql, params).fetchall()

        def run(sql: str, *params: Any) -> int:
            return execute(sql, params).rowcount

        def returning(sql: str, *params: Any) -> sqlite3.Row | None:
            # fetch every row: the statement (and its autocommit) completes only then
            rows = execute(sql, params).fetchall()
            return rows[0] if rows else None

        cursor = conn.cursor

        def tuples(sql: str, *params: Any) -> list[tuple]:
            cur = cursor()
            cur.row_factory = None  # plain tuples
            return cur.execute(sql, params).fetchall()

        self.one, self.all, self.run, self.returning = one, all_, run, returning
        self.tuples = tuples

    def stream(self, sql: str, *params: Any) -> Iterator[sqlite3.Row]:
        """Rows one at a time, for tables too big to hold in memory."""
        yield from self.conn.execute(sql, params)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

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

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent view for many reads (WAL: writers go on meanwhile)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    # -- schema ----------------------------------------------------------------------------

    def ddl(self, script: str) -> list[str]:
        return split_script(script)

    def lock_for_migration(self) -> None:
        pass  # BEGIN IMMEDIATE already holds the only write lock

    def table_exists(self, table: str) -> bool:
        return self.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        table) is not None

    def legacy_version(self) -> int:
        """The schema version of a database from before the schema_migrations table."""
        return self.one("PRAGMA user_version")[0]

    def after_migration(self, number: int) -> None:
        # kept in step, so a relay from before schema_migrations would not re-run anything
        self.conn.execute(f"PRAGMA user_version = {int(number)}")

    def columns(self, table: str) -> list[str]:
        return [r["name"] for r in self.all(f"PRAGMA table_info({table})")]

    def reset_identity(self, table: str, column: str) -> None:
        pass  # INTEGER PRIMARY KEY continues after the largest id by itself

    def close(self) -> None:
        self.conn.close()


# -- PostgreSQL ----------------------------------------------------------------------------

_PG_TYPES = (
    # an INTEGER PRIMARY KEY is SQLite's auto-numbered row id; BY DEFAULT lets an import
    # keep the ids it brings (then reset_identity moves the sequence past them)
    (re.compile(r"\bINTEGER PRIMARY KEY\b"),
     "INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),  # PostgreSQL's REAL has 4 bytes
    # ISO timestamps and ids compare byte by byte, as in SQLite, whatever the server locale
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
)


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled), once per text."""
    return sql.replace("%", "%%").replace("?", "%s")


def _translate(exc: Exception) -> DatabaseError:
    import psycopg
    from psycopg import errors

    text = " ".join(str(exc).split()) or type(exc).__name__
    busy = (errors.LockNotAvailable, errors.SerializationFailure, errors.DeadlockDetected,
            errors.QueryCanceled)
    if isinstance(exc, busy):
        return DatabaseBusy(f"database is busy: {text}")
    if isinstance(exc, psycopg.IntegrityError):
        return DatabaseIntegrityError(text)
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseBusy(f"database unavailable: {text}")
    return DatabaseError(text)


def _pg_modules() -> tuple[Any, Any, Any, Any]:
    try:
        import psycopg
        import psycopg_pool
        from psycopg.rows import dict_row, tuple_row
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DatabaseError(
            f"[database] url needs psycopg 3 and psycopg-pool ({exc}); install the "
            "project's `postgres` extra") from None
    return psycopg, psycopg_pool, dict_row, tuple_row


class PostgresBackend:
    """A psycopg 3 connection pool; autocommit outside ``transaction()``, READ COMMITTED."""

    name = "postgresql"
    insertion_order = "seq"  # an identity column of messages (migration 4)
    hidden_columns = frozenset({"seq"})
    conn = None  # no single connection: every statement borrows one from the pool

    def __init__(self, url: str, *, min_size: int = PG_POOL_MIN,
                 max_size: int = PG_POOL_MAX) -> None:
        psycopg, psycopg_pool, dict_row, tuple_row = _pg_modules()
        self.where = redact(url)
        try:
            # connect once directly: an unreachable server fails here with its own words,
            # instead of a pool that keeps retrying in the background
            psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT).close()
        except psycopg.Error as exc:
            raise _translate(exc) from None

        def configure(conn: Any) -> None:
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            # as SQLite's busy timeout: a write that waits this long for a row lock gives
            # up (DatabaseBusy, so 451 and the sender retries) instead of hanging
            conn.execute(f"SET lock_timeout = {BUSY_TIMEOUT_MS}")

        self.pool = psycopg_pool.ConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, name="relay",
            kwargs={"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": PG_CONNECT_TIMEOUT},
            configure=configure, timeout=PG_CONNECT_TIMEOUT)
        try:
            self.pool.open(wait=True, timeout=PG_CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            self.pool.close()
            raise _translate(exc) from None
        self._local = threading.local()  # the connection of this thread's transaction
        self.one = self._statement(lambda cur: cur.fetchone())
        self.all = self._statement(lambda cur: cur.fetchall())
        self.run = self._statement(lambda cur: cur.rowcount)
        self.returning = self.one
        self.tuples = self._statement(lambda cur: cur.fetchall(), tuple_row)

    def _statement(self, result: Callable[[Any], Any],
                   row_factory: Any = None) -> Callable[..., Any]:
        """A statement runner; ``row_factory``: other rows than the pool's dicts."""
        import psycopg

        local, pool, error = self._local, self.pool, psycopg.Error

        def execute(conn: Any, query: str, params: tuple) -> Any:
            if row_factory is None:
                return conn.execute(query, params)
            return conn.cursor(row_factory=row_factory).execute(query, params)

        def call(sql: str, *params: Any) -> Any:
            query = to_pyformat(sql)
            try:
                conn = getattr(local, "conn", None)
                if conn is not None:
                    return result(execute(conn, query, params))
                with pool.connection() as conn:
                    return result(execute(conn, query, params))
            except error as exc:
                raise _translate(exc) from exc

        return call

    def stream(self, sql: str, *params: Any) -> Iterator[dict]:
        """Rows one at a time (psycopg's single-row mode), for tables too big for memory."""
        import psycopg

        query = to_pyformat(sql)
        try:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                yield from conn.cursor().stream(query, params)
                return
            with self.pool.connection() as conn:
                yield from conn.cursor().stream(query, params)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        import psycopg

        query = to_pyformat(sql)
        try:
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.cursor().executemany(query, rows)
                return
            with self.pool.connection() as conn:
                conn.cursor().executemany(query, rows)
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    @contextmanager
    def _held(self, begin: str | None) -> Iterator[None]:
        """One pooled connection for the block; ``begin`` None = psycopg's transaction()."""
        import psycopg

        if getattr(self._local, "conn", None) is not None:
            yield  # nested: joins the outer transaction
            return
        try:
            with self.pool.connection() as conn:
                self._local.conn = conn
                try:
                    if begin is None:
                        with conn.transaction():
                            yield
                    else:
                        conn.execute(begin)
                        try:
                            yield
                        finally:
                            conn.execute("ROLLBACK")  # read only: nothing to keep
                finally:
                    self._local.conn = None
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    def transaction(self) -> Any:
        """All or nothing, at READ COMMITTED: short, and row locks only where written."""
        return self._held(None)

    def snapshot(self) -> Any:
        return self._held("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    # -- schema ----------------------------------------------------------------------------

    def ddl(self, script: str) -> list[str]:
        for pattern, replacement in _PG_TYPES:
            script = pattern.sub(replacement, script)
        return split_script(script)

    def lock_for_migration(self) -> None:
        # two nodes started at once: the second waits, then finds the schema up to date;
        # a migration may wait for its locks as long as it takes
        self.run("SET LOCAL lock_timeout = 0")
        self.run(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")

    def table_exists(self, table: str) -> bool:
        return self.one("SELECT to_regclass(?) AS t", table)["t"] is not None

    def legacy_version(self) -> int:
        return 0

    def after_migration(self, number: int) -> None:
        pass

    def columns(self, table: str) -> list[str]:
        return [r["column_name"] for r in self.all(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
            " AND table_schema = current_schema() ORDER BY ordinal_position", table)]

    def reset_identity(self, table: str, column: str) -> None:
        """After rows came in with their own ids, new ids start past the largest."""
        self.run(f"SELECT setval(pg_get_serial_sequence(?, ?),"
                 f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)",
                 table, column)

    def close(self) -> None:
        self.pool.close()


Backend = SQLiteBackend | PostgresBackend


def connect(target: str | Path) -> Backend:
    """The back-end for a ``postgresql://`` URL, else for an SQLite file path."""
    if is_url(target):
        return PostgresBackend(str(target))
    return SQLiteBackend(target)
