"""PostgreSQL for the tests: a fresh database per test session, a fresh schema per store.

``RELAY_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) names the
server and a database to administer it from. The session creates ``relay_test_<random>``
there and drops it at the end; every store a test asks for lives in its own schema of that
database (``options=-csearch_path=...`` in its URL), so tests never see each other's rows.

Without a reachable server (or without psycopg), the PostgreSQL tests are skipped with the
reason; with ``RELAY_TEST_PG_REQUIRED=1`` (set by .ci/run when it found a server) they fail
instead. ``python -m tests.pg`` prints one line saying whether they can run here, and why not.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 3


def admin_url() -> str:
    return os.environ.get("RELAY_TEST_PG_URL", DEFAULT_URL).strip()


def required() -> bool:
    return os.environ.get("RELAY_TEST_PG_REQUIRED", "") not in ("", "0")


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    url = admin_url()
    if not url or url.lower() == "off":
        return "RELAY_TEST_PG_URL is empty: PostgreSQL tests turned off"
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - the back-end needs it too
    except ImportError as exc:
        return f"psycopg 3 / psycopg-pool not installed ({exc.name})"
    from aliasdb.dialects import redact

    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        return f"no PostgreSQL server reachable at {redact(url)} ({detail})"
    return None


def with_database(url: str, dbname: str, schema: str | None = None) -> str:
    parts = urlsplit(url)
    query = f"options={quote(f'-csearch_path={schema}')}" if schema else ""
    return urlunsplit(parts._replace(path=f"/{dbname}", query=query))


class PgServer:
    """The session's database; ``new_url()`` gives a URL on a fresh, empty schema."""

    def __init__(self, admin: str) -> None:
        import psycopg

        self.admin = admin
        self.dbname = f"relay_test_{secrets.token_hex(4)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.url = with_database(admin, self.dbname)
        self.count = 0

    def new_url(self) -> str:
        import psycopg

        self.count += 1
        schema = f"s{self.count}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return with_database(self.admin, self.dbname, schema)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL database; skips (or fails, if required) without a server."""
    reason = unavailable()
    if reason is not None:
        if required():
            pytest.fail(f"RELAY_TEST_PG_REQUIRED is set but {reason}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = PgServer(admin_url())
    try:
        yield server
    finally:
        server.drop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL of an empty schema of its own, for one test."""
    return pg_server.new_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path) -> str:
    """A fresh database on each engine: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    return request.getfixturevalue("pg_url")


def main() -> int:
    reason = unavailable()
    if reason is None:
        from aliasdb.dialects import redact

        print(f"PostgreSQL tests: run against {redact(admin_url())} "
              "(a fresh relay_test_* database, dropped afterwards)")
    else:
        print(f"PostgreSQL tests: SKIPPED - {reason}. Start a server or set "
              "RELAY_TEST_PG_URL to run them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
