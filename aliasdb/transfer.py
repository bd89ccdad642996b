"""Moving a relay database between stores: a JSON-lines export, and an import with counts.

The export is every data table as stored (no decoding), read in one consistent snapshot:

    {"format": "marketplace-relay-db", "version": 1, "schema_version": 5, ...}
    {"table": "meta", "columns": ["key", "value"]}
    ["secret", "..."]                                  one JSON array per row
    {"table": "sellers", "columns": [...]}
    ...
    {"end": {"meta": 1, "sellers": 12, ...}}           the row count of every table

The import takes that file, or an SQLite database file directly, into an empty store (a
``relay init`` one is fine: its secret is replaced by the source's, which every alias
token and VERP address was derived from), in one transaction, and checks three counts per
table before it commits: the rows the source declares, the rows read, the rows now in the
target. Any difference rolls everything back. An export of an older schema imports too:
columns added since are filled in by the store as it would have written them (schema 5's
aliases get their pair's seller and buyer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aliasdb.migrations import LATEST, TABLES
from aliasdb.store import Store

FORMAT = "marketplace-relay-db"
VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
BATCH = 1000


class TransferError(ValueError):
    """A file that is not a complete export, or a target that is not empty."""


@dataclass
class TableCount:
    table: str
    source: int  # what the source declares (the export's trailer, or COUNT(*) of the file)
    read: int  # rows read from the source
    imported: int  # rows in the target after the import

    @property
    def ok(self) -> bool:
        return self.source == self.read == self.imported


def export(store: Store, out: IO[str], progress: Callable[[str, int], None] | None = None,
           ) -> dict[str, int]:
    """Write every table of ``store`` to ``out``; the row count of each table."""
    counts: dict[str, int] = {}
    with store.snapshot():
        out.write(_line({"format": FORMAT, "version": VERSION,
                         "schema_version": store.schema_version(), "engine": store.engine,
                         "exported_at": datetime.now(UTC).isoformat(timespec="seconds")}))
        for table in TABLES:
            columns = store.table_columns(table)
            out.write(_line({"table": table, "columns": columns}))
            n = 0
            for row in store.dump_table(table, columns):
                out.write(_line(list(row)))
                n += 1
            counts[table] = n
            if progress is not None:
                progress(table, n)
        out.write(_line({"end": counts}))
    return counts


def _line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


# -- reading a source ------------------------------------------------------------------------

Chunk = tuple[str, list[str], list[tuple]]  # table, columns, a batch of rows


class Source:
    """Batches of rows from an export file or an SQLite database, and the declared counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.declared: dict[str, int] | None = None
        self.schema_version = 0
        with path.open("rb") as fh:
            self.is_sqlite = fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC

    def chunks(self) -> Iterator[Chunk]:
        yield from (self._sqlite() if self.is_sqlite else self._jsonl())

    def _sqlite(self) -> Iterator[Chunk]:
        source = Store.open(self.path)  # migrated, as the relay itself would on start
        try:
            with source.snapshot():
                self.schema_version = source.schema_version()
                self.declared = {t: source.table_count(t) for t in TABLES}
                for table in TABLES:
                    columns = source.table_columns(table)
                    yield from _batched(table, columns, source.dump_table(table, columns))
        finally:
            source.close()

    def _jsonl(self) -> Iterator[Chunk]:
        with self.path.open(encoding="utf-8") as fh:
            header = self._header(fh.readline())
            self.schema_version = header["schema_version"]
            table: str | None = None
            columns: list[str] = []
            batch: list[tuple] = []
            for number, text in enumerate(fh, start=2):
                try:
                    item = json.loads(text)
                except ValueError:
                    raise TransferError(f"{self.path}: line {number}: not JSON") from None
                if isinstance(item, list):
                    if table is None or len(item) != len(columns):
                        raise TransferError(f"{self.path}: line {number}: a row that fits "
                                            "no table header")
                    batch.append(tuple(item))
                    if len(batch) >= BATCH:
                        yield table, columns, batch
                        batch = []
                    continue
                if not isinstance(item, dict):
                    raise TransferError(f"{self.path}: line {number}: unexpected {item!r:.40}")
                if table is not None and batch:
                    yield table, columns, batch
                batch = []
                if "end" in item:
                    self.declared = {str(k): int(v) for k, v in item["end"].items()}
                    table = None
                    break
                table, columns = item.get("table"), item.get("columns")
                if table not in TABLES or not isinstance(columns, list):
                    raise TransferError(f"{self.path}: line {number}: unknown table {table!r}")
            if self.declared is None:
                raise TransferError(f"{self.path}: no end line: the export is incomplete")

    def _header(self, text: str) -> dict:
        try:
            header = json.loads(text)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise TransferError(f"{self.path}: neither a relay export nor an SQLite database")
        if header.get("version") != VERSION:
            raise TransferError(f"{self.path}: export format version {header.get('version')}"
                                f" (this relay reads {VERSION})")
        if not isinstance(header.get("schema_version"), int) or header["schema_version"] > LATEST:
            raise TransferError(f"{self.path}: schema version {header.get('schema_version')} "
                                f"is newer than this relay's ({LATEST}): upgrade the relay")
        return header


def _batched(table: str, columns: list[str], rows: Iterator[tuple]) -> Iterator[Chunk]:
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield table, columns, batch
            batch = []
    if batch:
        yield table, columns, batch


# -- importing --------------------------------------------------------------------------------


def check_empty(store: Store) -> None:
    busy = {t: n for t in TABLES if t != "meta" and (n := store.table_count(t))}
    if busy:
        listed = ", ".join(f"{t} ({n})" for t, n in busy.items())
        raise TransferError(f"the target database {store.where} is not empty: {listed}; "
                            "import only into a new database")


def import_into(store: Store, source: Source,
                progress: Callable[[str, int], None] | None = None) -> list[TableCount]:
    """Load ``source`` into the empty ``store``; commits only if every count matches."""
    check_empty(store)
    read = dict.fromkeys(TABLES, 0)
    with store.transaction():
        for table, columns, rows in source.chunks():
            store.load_rows(table, columns, rows)
            read[table] += len(rows)
            if progress is not None:
                progress(table, len(rows))
        store.after_load()
        declared = source.declared or {}
        result = [TableCount(t, declared.get(t, -1), read[t], store.table_count(t))
                  for t in TABLES]
        if not all(c.ok for c in result):
            raise CountMismatch(result)
    return result


class CountMismatch(TransferError):
    def __init__(self, counts: list[TableCount]) -> None:
        self.counts = counts
        bad = ", ".join(f"{c.table} (source {c.source}, read {c.read}, imported {c.imported})"
                        for c in counts if not c.ok)
        super().__init__(f"row counts differ, nothing was imported: {bad}")
