"""`relay order import FILE.csv`: bulk, idempotent upsert of orders.

Every row is checked before anything is written; a row with a problem is reported as
``line N: <problem>`` (N counts physical lines, the header is line 1) and skipped whole.
Good rows are upserted in batched transactions, so a 100k-row file takes seconds and an
interruption leaves only whole batches behind, which a re-run (idempotent) completes.
"""

from __future__ import annotations

import csv
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from aliasdb.store import Store
from relay.cli.common import config_option, emit, fail, json_option, open_store
from relay.cli.validate import (
    BadInput,
    check_category,
    check_id,
    check_status,
    order_completion,
    parse_when,
)
from relay.config import Config

COLUMNS = ("order_id", "seller_id", "buyer_id", "category", "status", "completed_at")
REQUIRED = ("order_id", "seller_id", "buyer_id")
BATCH_ROWS = 1000


@dataclass(frozen=True)
class OrderRow:
    line: int
    order_id: str
    seller_id: str
    buyer_id: str
    category: str | None
    status: str
    completed_at: datetime | None


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the records with the physical line each starts on.

    A problem with the file as a whole (unreadable, not UTF-8, broken quoting, no
    header) raises ``BadInput``: nothing can be imported from it.
    """
    records: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            next_line = 1
            for record in reader:
                if record:  # csv yields [] for a blank line
                    records.append((next_line, record))
                next_line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise BadInput(f"{path}: line {next_line}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if not records or records[0][0] != 1:
        raise BadInput(f"{path}: line 1 must be the header: {','.join(COLUMNS)}")
    header = [name.strip().lower() for name in records[0][1]]
    unknown = [name for name in header if name not in COLUMNS]
    missing = [name for name in REQUIRED if name not in header]
    if unknown or missing:
        detail = "; ".join(filter(None, [
            f"unknown column(s) {', '.join(map(repr, unknown))}" if unknown else "",
            f"missing column(s) {', '.join(missing)}" if missing else ""]))
        raise BadInput(f"{path}: line 1: header {detail} (columns: {', '.join(COLUMNS)})")
    if len(set(header)) != len(header):
        raise BadInput(f"{path}: line 1: a column appears twice in the header")
    return header, records[1:]


class _Checker:
    """Checks rows against the input rules and the store, with look-ups cached."""

    def __init__(self, store: Store, now: datetime) -> None:
        self.store = store
        self.now = now
        self.sellers: dict[str, bool] = {}
        self.buyers: dict[str, bool] = {}
        self.seen: dict[str, int] = {}

    def _seller_exists(self, seller_id: str) -> bool:
        if seller_id not in self.sellers:
            self.sellers[seller_id] = self.store.find_seller(seller_id) is not None
        return self.sellers[seller_id]

    def _buyer_exists(self, buyer_id: str) -> bool:
        if buyer_id not in self.buyers:
            self.buyers[buyer_id] = self.store.find_buyer(buyer_id) is not None
        return self.buyers[buyer_id]

    def check(self, line: int, values: dict[str, str]) -> OrderRow:
        problems: list[str] = []

        def attempt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except BadInput as exc:
                problems.append(str(exc))
                return None

        order_id = attempt(check_id, values["order_id"], "order id")
        seller_id = attempt(check_id, values["seller_id"], "seller id")
        buyer_id = attempt(check_id, values["buyer_id"], "buyer id")
        category = attempt(check_category, values.get("category"))
        status = attempt(check_status, values.get("status"))
        raw_when = values.get("completed_at") or ""
        when = attempt(parse_when, raw_when, "completed_at") if raw_when else None
        if seller_id is not None and not self._seller_exists(seller_id):
            problems.append(f"unknown seller {seller_id}")
        if buyer_id is not None and not self._buyer_exists(buyer_id):
            problems.append(f"unknown buyer {buyer_id}")
        if order_id is not None:
            if order_id in self.seen:
                # a second row for one order would make the outcome depend on row order
                problems.append(f"order {order_id} already on line {self.seen[order_id]}")
            else:
                self.seen[order_id] = line
        if problems:
            raise BadInput("; ".join(problems))
        existing = None
        if status == "completed" and when is None:
            existing = self.store.find_order(order_id)  # keep a stored completion time
        final_status, completed_at = order_completion(status, when, existing, self.now)
        return OrderRow(line, order_id, seller_id, buyer_id, category, final_status,
                        completed_at)


def check_rows(store: Store, header: list[str], records: list[tuple[int, list[str]]],
               now: datetime | None = None) -> tuple[list[OrderRow], list[Problem]]:
    """Split the records into rows to import and problems, writing nothing."""
    checker = _Checker(store, now or datetime.now(UTC))
    good: list[OrderRow] = []
    problems: list[Problem] = []
    for line, record in records:
        if len(record) != len(header):
            problems.append(Problem(line, f"expected {len(header)} fields, got {len(record)}"))
            continue
        values = {name: value.strip() for name, value in zip(header, record, strict=True)}
        try:
            good.append(checker.check(line, values))
        except BadInput as exc:
            problems.append(Problem(line, str(exc)))
    return good, problems


def _batches(rows: list[OrderRow], size: int) -> Iterator[list[OrderRow]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def import_rows(store: Store, rows: list[OrderRow], bar: Any = None,
                batch_rows: int = BATCH_ROWS) -> Counter[str]:
    """Upsert checked rows, one transaction per batch; counts of each outcome."""
    outcomes: Counter[str] = Counter()
    done = 0
    for batch in _batches(rows, batch_rows):
        try:
            with store.transaction():
                for row in batch:
                    outcomes[store.upsert_order(
                        row.order_id, row.seller_id, row.buyer_id, category=row.category,
                        status=row.status, completed_at=row.completed_at)] += 1
        except sqlite3.Error as exc:
            fail(f"database error at line {batch[0].line} ({exc}); {done} rows were imported"
                 " before it; re-run the import (it is idempotent)")
        done += len(batch)
        if bar is not None:
            bar.update(len(batch))
    return outcomes


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@config_option
def import_command(config: Config, file: Path, as_json: bool) -> None:
    """Upsert orders from FILE.csv.

    Columns: order_id,seller_id,buyer_id[,category,status,completed_at], header row
    first. Rows with problems are reported on stderr and skipped; exit status 1 if any.
    """
    store = open_store(config)
    header, records = read_csv(file)
    rows, problems = check_rows(store, header, records)
    for problem in problems:
        click.echo(str(problem), err=True)
    with click.progressbar(length=len(rows), label="importing orders", file=sys.stderr,
                           show_pos=True) as bar:
        outcomes = import_rows(store, rows, bar)
    summary = {"inserted": outcomes["inserted"], "updated": outcomes["updated"],
               "unchanged": outcomes["unchanged"], "errors": len(problems),
               "problems": [{"line": p.line, "error": p.message} for p in problems]}
    emit(summary, as_json, lambda s: click.echo(
        f"imported: {s['inserted']} inserted, {s['updated']} updated,"
        f" {s['unchanged']} unchanged, {s['errors']} errors"))
    if problems:
        click.get_current_context().exit(1)
