"""`relay order import FILE.csv`: per-row errors by line, whole rows only, idempotent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aliasdb.store import Store
from relay.cli import main

HEADER = "order_id,seller_id,buyer_id,category,status,completed_at\n"


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.config = tmp_path / "relay.toml"
        self.config.write_text('[database]\npath = "relay.db"\n\n[delivery]\nmaildir = "maildir"\n')
        self.runner = CliRunner()

    def run(self, *args: str) -> Result:
        return self.runner.invoke(main, [*args, "--config", str(self.config)])

    def csv(self, text: str, name: str = "orders.csv") -> str:
        path = self.dir / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def store(self) -> Store:
        return Store.open(self.dir / "relay.db")


@pytest.fixture
def env(tmp_path) -> Env:
    e = Env(tmp_path)
    for args in (["init"], ["seller", "add", "s1", "--name", "Shop One"],
                 ["seller", "add", "s2", "--name", "Shop Two"],
                 ["buyer", "add", "b1", "jane@buyer.example"],
                 ["buyer", "add", "b2", "joe@buyer.example"]):
        assert e.run(*args).exit_code == 0
    return e


def test_good_file(env):
    path = env.csv(HEADER
                   + "302-4418760-1193825,s1,b1,books,shipped,\n"
                   + "302-0000001-0000001,s2,b1,,completed,2024-05-01T12:00:00+02:00\n"
                   + "o-3,s1,b2,,,\n")
    result = env.run("order", "import", path)
    assert result.exit_code == 0, result.stderr
    assert "imported: 3 inserted, 0 updated, 0 unchanged, 0 errors" in result.stdout
    s = env.store()
    first = s.find_order("302-4418760-1193825")
    assert (first.seller_id, first.buyer_id, first.category, first.status) == (
        "s1", "b1", "books", "shipped")
    second = s.find_order("302-0000001-0000001")
    assert second.status == "completed"
    assert second.completed_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert s.find_order("o-3").status == "pending"  # the default
    assert s.counts()["pairs"] == 3  # each order's pair exists, ready for aliases
    s.close()


def test_optional_columns_may_be_left_out(env):
    path = env.csv("order_id,seller_id,buyer_id\r\no1,s1,b1\r\no2,s2,b2\r\n")
    result = env.run("order", "import", path, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["inserted"] == 2


def test_bad_rows_are_reported_by_line_and_skipped(env):
    path = env.csv(
        HEADER                                               # line 1
        + "o1,s1,b1,books,shipped,\n"                        # 2: good
        + "o2,nobody,b1,,,\n"                                # 3: unknown seller
        + "\n"                                               # 4: blank, ignored
        + "o3,s1,b1,,lost,\n"                                # 5: bad status
        + 'o4,s1,b1,"two\nline category",,\n'                # 6-7: newline in category
        + "o5,s1,b1,,completed,31/12/2024\n"                 # 8: malformed date
        + "o/6,s1,b1,,,\n"                                   # 9: bad id
        + "o7,s1,nobody,,,\n"                                # 10: unknown buyer
        + "o8,s1,b1,,shipped,2024-01-01\n"                   # 11: date needs completed
        + "o9,s1,b1,,completed,2999-01-01\n"                 # 12: future
        + "o10,s1,b1\n"                                      # 13: too few fields
        + "o1,s2,b2,,,\n"                                    # 14: repeats line 2
        + "o11,s2,b2,,completed,2024-02-29\n")               # 15: good
    result = env.run("order", "import", path)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    # physical lines: the record on lines 6-7 moves everything after it down by one
    assert [int(e.split(":")[0].split()[1]) for e in errors] == [3, 5, 6, 8, 9, 10, 11, 12,
                                                                 13, 14]
    assert "unknown seller nobody" in errors[0]
    assert "invalid status 'lost'" in errors[1]
    assert "control characters" in errors.pop(2)
    assert "invalid completed_at" in errors[2]
    assert "invalid order id" in errors[3]
    assert "unknown buyer nobody" in errors[4]
    assert "only allowed with status completed" in errors[5]
    assert "future" in errors[6]
    assert "expected 6 fields, got 3" in errors[7]
    assert "already on line 2" in errors[8]
    assert "Traceback" not in result.stderr
    assert "imported: 2 inserted, 0 updated, 0 unchanged, 10 errors" in result.stdout

    s = env.store()
    assert s.find_order("o1").seller_id == "s1"  # the repeat did not overwrite it
    assert s.find_order("o11").completed_at == datetime(2024, 2, 29, tzinfo=UTC)
    for bad in ("o2", "o3", "o4", "o5", "o/6", "o7", "o8", "o9", "o10"):
        assert s.find_order(bad) is None
    assert s.counts()["orders"] == 2
    s.close()


def test_reimport_is_idempotent(env):
    rows = "".join(f"o{i},s{i % 2 + 1},b{i % 3 % 2 + 1},cat{i % 4},"
                   f"{'completed' if i % 5 == 0 else 'shipped'},\n" for i in range(50))
    path = env.csv(HEADER + rows)
    first = json.loads(env.run("order", "import", path, "--json").stdout)
    assert (first["inserted"], first["updated"], first["unchanged"]) == (50, 0, 0)
    s = env.store()
    completed = {o: s.find_order(o).completed_at for o in ("o0", "o5")}
    s.close()
    # completed rows without a time got "now" once; a re-import keeps that time
    second = json.loads(env.run("order", "import", path, "--json").stdout)
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, 50)
    s = env.store()
    assert {o: s.find_order(o).completed_at for o in ("o0", "o5")} == completed
    s.close()

    changed = env.csv(HEADER + rows.replace("o1,s2,b2,cat1,shipped,", "o1,s2,b2,cat1,cancelled,"),
                      "changed.csv")
    third = env.run("order", "import", changed)
    assert "imported: 0 inserted, 1 updated, 49 unchanged, 0 errors" in third.stdout
    s = env.store()
    assert s.find_order("o1").status == "cancelled"
    s.close()


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "header"),
    ("o1,s1,b1,,,\n", "unknown column"),
    ("order_id,seller_id,category\no1,s1,x\n", "missing column(s) buyer_id"),
    ("order_id,seller_id,buyer_id,order_id\no1,s1,b1,o1\n", "twice"),
    ('order_id,seller_id,buyer_id\no1,s1,"b1\n', "malformed CSV"),
])
def test_a_broken_file_imports_nothing(env, text, fragment):
    result = env.run("order", "import", env.csv(text))
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and fragment in result.stderr
    s = env.store()
    assert s.counts()["orders"] == 0
    s.close()


def test_not_utf8_is_one_line(env):
    path = env.dir / "latin1.csv"
    path.write_bytes((HEADER + "o1,s1,b1,caf\xe9,,\n").encode("latin-1"))
    result = env.run("order", "import", str(path))
    assert result.exit_code == 1 and "not UTF-8" in result.stderr


def test_byte_order_mark_and_spaces(env):
    path = env.dir / "excel.csv"
    path.write_bytes(("\ufeffOrder_ID, Seller_ID ,buyer_id,status\n o1 , s1 ,b1, Shipped \n")
                     .encode("utf-8"))
    result = env.run("order", "import", str(path))
    assert result.exit_code == 0, result.stderr
    s = env.store()
    assert s.find_order("o1").status == "shipped"
    s.close()


def test_twenty_thousand_rows(env):
    count = 20_000
    lines = [HEADER]
    for i in range(count):
        status = ("pending", "shipped", "completed", "cancelled")[i % 4]
        when = "2024-03-01T08:00:00Z" if status == "completed" else ""
        lines.append(f"302-{i:07d}-{i * 7 % 10_000_000:07d},s{i % 2 + 1},b{i % 3 % 2 + 1},"
                     f"cat{i % 10},{status},{when}\n")
    path = env.csv("".join(lines))
    result = env.run("order", "import", path, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["inserted"], summary["errors"]) == (count, 0)
    s = env.store()
    assert s.counts()["orders"] == count
    last = s.find_order(f"302-{count - 1:07d}-{(count - 1) * 7 % 10_000_000:07d}")
    assert (last.status, last.category) == ("cancelled", "cat9")
    done = s.find_order("302-0000002-0000014")
    assert done.completed_at == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    s.close()
    again = json.loads(env.run("order", "import", path, "--json").stdout)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, count)
