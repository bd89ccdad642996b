"""`relay db`: the schema, and moving a node's database (SQLite to PostgreSQL).

    relay db migrate             bring the schema of [database] up to date (both engines)
    relay db export FILE         every table as JSON lines, from one consistent snapshot
    relay db import FILE         an export (or an SQLite database file) into an empty
                                 database, with the row count of every table checked
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from aliasdb.migrations import LATEST
from aliasdb.transfer import CountMismatch, Source, TransferError, export, import_into
from relay.cli.common import config_option, emit, fail, json_option, open_store, table
from relay.config import Config


@click.group("db")
def db_group() -> None:
    """The database: schema migrations, export and import."""


@db_group.command("migrate")
@json_option
@config_option
def migrate_command(config: Config, as_json: bool) -> None:
    """Bring the database schema up to date (idempotent; safe with nodes running)."""
    store = open_store(config, require_init=False)
    before = store.migrated_from
    data = {"database": store.where, "engine": store.engine, "from": before, "to": LATEST}
    emit(data, as_json, lambda d: click.echo(
        f"database {d['database']}: schema version {d['to']}"
        + (" (up to date)" if d["from"] == d["to"] else f" (migrated from {d['from']})")))


@db_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@json_option
@config_option
def export_command(config: Config, file: Path, force: bool, as_json: bool) -> None:
    """Write every table to FILE (JSON lines), from one consistent snapshot."""
    if file.exists() and not force:
        fail(f"{file} exists: choose another name or pass --force")
    store = open_store(config)
    partial = file.with_name(file.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            counts = export(store, out)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(file)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {file}: {exc.strerror or exc}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    data = {"file": str(file), "database": store.where, "counts": counts}

    def human(d: dict) -> None:
        table([(t, n) for t, n in d["counts"].items()], ["table", "rows"])
        click.echo(f"exported {sum(d['counts'].values())} rows from {d['database']} "
                   f"to {d['file']}")

    emit(data, as_json, human)


@db_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@config_option
def import_command(config: Config, file: Path, as_json: bool) -> None:
    """Load FILE (a `relay db export` file, or an SQLite relay.db) into an empty database.

    The target is the configured database (typically [database] url, PostgreSQL); it is
    migrated first. All rows go in one transaction, which commits only when every table's
    row count in the target equals the source's; otherwise nothing is imported.
    """
    store = open_store(config, require_init=False)
    try:
        counts = import_into(store, Source(file))
        ok = True
    except CountMismatch as exc:
        counts, ok = exc.counts, False
    except TransferError as exc:
        fail(str(exc))
    data = {"file": str(file), "database": store.where, "ok": ok,
            "counts": {c.table: {"source": c.source, "read": c.read, "imported": c.imported}
                       for c in counts}}

    def human(d: dict) -> None:
        table([(t, c["source"], c["read"], c["imported"],
                "ok" if c["source"] == c["read"] == c["imported"] else "DIFFERS")
               for t, c in d["counts"].items()], ["table", "source", "read", "imported", ""])
        if d["ok"]:
            click.echo(f"imported {sum(c['imported'] for c in d['counts'].values())} rows "
                       f"into {d['database']}")

    emit(data, as_json, human)
    if not ok:
        fail("row counts differ: nothing was imported (the transaction was rolled back)")


def register(group: click.Group) -> None:
    group.add_command(db_group)
