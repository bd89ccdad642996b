"""The `relay` CLI through click's CliRunner against a real database in tmp_path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aliasdb.store import Store
from relay.cli import main

TOKEN_RE = r"[a-z2-7]{20}"
ALIAS_RE = re.compile(rf"{TOKEN_RE}@relay\.example")


class Cli:
    """Runs `relay ... --config <tmp config>` and checks the outcome."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.config = tmp_path / "relay.toml"
        self.config.write_text('[database]\npath = "relay.db"\n\n[delivery]\n'
                               'maildir = "maildir"\n\n[dkim]\nkey = "dkim.key"\n')
        self.db = tmp_path / "relay.db"
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True) -> Result:
        result = self.runner.invoke(main, [*args, "--config", str(self.config)])
        if ok:
            assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
            assert result.stderr == ""
        return result

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)

    def store(self) -> Store:
        return Store.open(self.db)

    def snapshot(self) -> tuple[dict, dict]:
        """Row counts and every row of every table, to prove nothing changed."""
        s = self.store()
        try:
            dump = {name: list(s.db[name].rows) for name in s.db.table_names()}
            return s.counts(), dump
        finally:
            s.close()


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def seeded(cli) -> Cli:
    cli("init")
    cli("seller", "add", "s1", "--name", "Shop One", "--inbox", "Orders@Seller.example")
    cli("seller", "add", "s2", "--name", "Shop Two")
    cli("buyer", "add", "b1", "Jane@Buyer.example", "--name", "Jane")
    cli("order", "add", "302-4418760-1193825", "--seller", "s1", "--buyer", "b1")
    s = cli.store()
    s.record_message({
        "id": "msg-1", "ts": "2024-05-01T10:00:00+00:00", "direction": "seller_to_buyer",
        "seller_id": "s1", "buyer_id": "b1", "decision": "rejected", "policy": "content",
        "reason": "promotion", "smtp_code": 550,
        "findings": [{"policy": "known_alias", "result": "pass"},
                     {"policy": "content", "result": "reject", "code": 550,
                      "status": "5.7.1", "reason": "promotion", "rule_ids": ["promo-1"],
                      "effects": []}],
        "rule_ids": ["promo-1"]})
    s.close()
    return cli


# -- init --------------------------------------------------------------------------------


def test_init_is_idempotent(cli):
    first = cli("init")
    assert "created" in first.stdout
    assert cli.db.exists() and (cli.dir / "maildir").is_dir()
    secret = cli.store().secret
    second = cli("init")
    assert "created" not in second.stdout
    assert "present" in second.stdout
    assert cli.store().secret == secret  # never replaced


def test_commands_refuse_an_uninitialized_database(cli):
    line = one_line_error(cli("seller", "add", "s1", "--name", "Shop", ok=False))
    assert "relay init" in line
    assert not cli.db.exists()  # no database created as a side effect
    Store.open(cli.db).close()  # a database without the secret is not initialized either
    assert "relay init" in one_line_error(cli("alias", "show", "--seller", "s", "--buyer",
                                              "b", ok=False))


def test_config_from_environment(cli):
    result = cli.runner.invoke(main, ["init"], env={"RELAY_CONFIG": str(cli.config)})
    assert result.exit_code == 0
    assert cli.db.exists()


def test_config_error_is_one_line(cli):
    cli.config.write_text("[database]\npaht = 'x.db'\n")
    line = one_line_error(cli("init", ok=False))
    assert "database.paht" in line
    missing = cli.runner.invoke(main, ["init", "--config", str(cli.dir / "nope.toml")])
    assert "not found" in one_line_error(missing)


def test_python_dash_m_relay():
    done = subprocess.run([sys.executable, "-m", "relay", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert "seller" in done.stdout and "order" in done.stdout


# -- sellers, senders, buyers ------------------------------------------------------------


def test_seller_settings_and_status(seeded):
    cli = seeded
    cli("seller", "set", "s1", "--buyer-messages", "on", "--fulfilment", "marketplace",
        "--name", "Shop 1")
    data = cli.json("seller", "show", "s1")
    assert data["name"] == "Shop 1"
    assert data["inbox"] == "orders@seller.example"  # normalized
    assert data["buyer_messages"] is True
    assert data["fulfilment"] == "marketplace"
    assert data["status"] == "active" and data["suspended_at"] is None
    assert data["strikes"] == [] and data["strike_count"] == 0

    cli("seller", "suspend", "s1")
    suspended = cli.json("seller", "show", "s1")
    assert suspended["status"] == "suspended" and suspended["suspended_at"]
    assert "suspended since" in cli("seller", "show", "s1").stdout
    cli("seller", "reinstate", "s1")
    assert cli.json("seller", "show", "s1")["status"] == "active"
    cli("seller", "set", "s1", "--buyer-messages", "off")
    assert cli.json("seller", "show", "s1")["buyer_messages"] is False


def test_seller_show_lists_strikes(seeded):
    s = seeded.store()
    s.add_strike("s1", "[Important] on a promotion", "msg-1")
    s.add_strike("s1", "[Important] again")
    s.close()
    data = seeded.json("seller", "show", "s1")
    assert data["strike_count"] == 2 and data["strikes_in_window"] == 2
    assert [x["reason"] for x in data["strikes"]] == ["[Important] on a promotion",
                                                      "[Important] again"]
    assert "[Important] again" in seeded("seller", "show", "s1").stdout


def test_senders(seeded):
    cli = seeded
    cli("sender", "enable", "s1", "Sales@Seller.example")
    assert cli.json("sender", "list", "s1")[0]["status"] == "enabled"
    s = cli.store()
    assert s.enabled_senders("s1") == {"sales@seller.example"}
    s.close()
    cli("sender", "block", "s1", "spam@seller.example")
    cli("sender", "block", "s1", "SALES@seller.example")  # same address, now blocked
    listed = cli.json("sender", "list", "s1")
    assert [(x["address"], x["status"]) for x in listed] == [
        ("sales@seller.example", "blocked"), ("spam@seller.example", "blocked")]
    assert "spam@seller.example" in cli("sender", "list", "s1").stdout
    shown = cli.json("seller", "show", "s1")["senders"]
    assert [x["address"] for x in shown] == ["sales@seller.example", "spam@seller.example"]


def test_buyer_and_optout(seeded):
    cli = seeded
    s = cli.store()
    assert s.buyer("b1").address == "jane@buyer.example"
    s.close()
    cli("optout", "set", "b1")
    s = cli.store()
    assert s.buyer("b1").opted_out
    s.close()
    cli("optout", "clear", "b1")
    s = cli.store()
    assert not s.buyer("b1").opted_out
    s.close()


# -- orders and aliases ------------------------------------------------------------------


def test_order_add_and_update(seeded):
    cli = seeded
    assert "unchanged" in cli("order", "add", "302-4418760-1193825", "--seller", "s1",
                              "--buyer", "b1").stdout
    out = cli("order", "add", "302-4418760-1193825", "--seller", "s1", "--buyer", "b1",
              "--status", "completed", "--completed-at", "2024-05-01", "--category", "books")
    assert "updated" in out.stdout
    s = cli.store()
    order = s.find_order("302-4418760-1193825")
    s.close()
    assert (order.status, order.category) == ("completed", "books")
    assert order.completed_at.isoformat() == "2024-05-01T00:00:00+00:00"  # midnight UTC

    cli("order", "add", "o-2", "--seller", "s2", "--buyer", "b1", "--status", "completed",
        "--completed-at", "2024-05-01T12:00:00+02:00")
    s = cli.store()
    assert s.find_order("o-2").completed_at.isoformat() == "2024-05-01T10:00:00+00:00"
    s.close()


def test_completed_without_time_is_now_and_kept(seeded):
    cli = seeded
    cli("order", "add", "o-3", "--seller", "s1", "--buyer", "b1", "--status", "completed")
    s = cli.store()
    first = s.find_order("o-3").completed_at
    s.close()
    assert first is not None
    # repeating it must not restart the cutoff clock
    assert "unchanged" in cli("order", "add", "o-3", "--seller", "s1", "--buyer", "b1",
                              "--status", "completed").stdout


def test_alias_show_find_and_revoke(seeded):
    cli = seeded
    aliases = cli.json("alias", "show", "--seller", "s1", "--buyer", "b1")
    assert set(aliases) == {"buyer_alias", "seller_alias"}
    assert ALIAS_RE.fullmatch(aliases["buyer_alias"])
    assert ALIAS_RE.fullmatch(aliases["seller_alias"])
    assert cli.json("alias", "show", "--seller", "s1", "--buyer", "b1") == aliases  # stable
    other = cli.json("alias", "show", "--seller", "s2", "--buyer", "b1")
    assert other["buyer_alias"] != aliases["buyer_alias"]  # unlinkable across sellers

    found = cli.json("order", "find", aliases["buyer_alias"].upper())  # case-insensitive
    assert (found["seller"], found["buyer"], found["role"]) == ("s1", "b1", "buyer")
    assert [o["id"] for o in found["orders"]] == ["302-4418760-1193825"]
    assert "302-4418760-1193825" in cli("order", "find", aliases["seller_alias"]).stdout
    assert cli.json("order", "find", other["buyer_alias"])["orders"] == []

    cli("alias", "revoke", aliases["buyer_alias"])
    assert cli.json("order", "find", aliases["buyer_alias"])["revoked"] is True
    renewed = cli.json("alias", "show", "--seller", "s1", "--buyer", "b1")
    assert renewed["buyer_alias"] != aliases["buyer_alias"]
    assert renewed["seller_alias"] == aliases["seller_alias"]
    assert "already revoked" in cli("alias", "revoke", aliases["buyer_alias"]).stdout


# -- messages and reports ----------------------------------------------------------------


def test_messages(seeded):
    cli = seeded
    listed = cli.json("messages", "list")
    assert [m["id"] for m in listed] == ["msg-1"]
    assert cli.json("messages", "list", "--seller", "s2") == []
    assert cli.json("messages", "list", "--buyer", "b1", "--since", "2024-05-01") != []
    assert cli.json("messages", "list", "--since", "2024-05-02T00:00:00Z") == []
    assert cli.json("messages", "list", "--limit", "1")[0]["id"] == "msg-1"
    assert "msg-1" in cli("messages", "list").stdout

    shown = cli.json("messages", "show", "msg-1")
    assert shown["decision"] == "rejected" and shown["rule_ids"] == ["promo-1"]
    assert [f["policy"] for f in shown["findings"]] == ["known_alias", "content"]
    human = cli("messages", "show", "msg-1").stdout
    assert "known_alias: pass" in human
    assert "content: reject 550 5.7.1 - promotion [rules: promo-1]" in human


def test_reports(seeded):
    cli = seeded
    assert "report 1" in cli("report", "add", "msg-1", "--by", "buyer", "--reason",
                             "spam").stdout
    cli("report", "add", "msg-1", "--by", "seller", "--reason", "rude\nreply")
    reports = cli.json("report", "list")
    assert [(r["id"], r["by"], r["status"]) for r in reports] == [
        (1, "buyer", "open"), (2, "seller", "open")]
    assert reports[1]["reason"] == "rude reply"  # kept on one line
    cli("report", "resolve", "1", "--note", "warned the seller")
    assert [r["id"] for r in cli.json("report", "list", "--status", "open")] == [2]
    resolved = cli.json("report", "list", "--status", "resolved")
    assert resolved[0]["note"] == "warned the seller"
    assert "warned the seller" in cli("report", "list").stdout


# -- bad input: one line on stderr, non-zero exit, database unchanged --------------------

BAD_INPUT = [
    # (arguments, a fragment of the error line)
    (["seller", "add", "s1", "--name", "Again"], "exists"),
    (["seller", "add", "bad id", "--name", "X"], "invalid seller id"),
    (["seller", "add", "s" * 65, "--name", "X"], "invalid seller id"),
    (["seller", "add", "s3", "--name", "X", "--inbox", "not-an-address"], "invalid address"),
    (["seller", "add", "s3", "--name", "X", "--inbox", "a@shop.test"], "invalid address"),
    (["seller", "add", "s3", "--name", "  "], "invalid name"),
    (["seller", "add", "s3"], "--name"),
    (["seller", "set", "nobody", "--name", "X"], "nobody"),
    (["seller", "set", "s1"], "nothing to change"),
    (["seller", "set", "s2", "--buyer-messages", "on"], "no inbox"),
    (["seller", "set", "s1", "--buyer-messages", "maybe"], "--buyer-messages"),
    (["seller", "set", "s1", "--fulfilment", "drone"], "--fulfilment"),
    (["seller", "set", "s1", "--inbox", "x@@seller.example"], "invalid address"),
    (["seller", "show", "nobody"], "nobody"),
    (["seller", "suspend", "nobody"], "nobody"),
    (["seller", "reinstate", "nobody"], "nobody"),
    (["sender", "enable", "nobody", "a@seller.example"], "nobody"),
    (["sender", "enable", "s1", "a@seller.test"], "invalid address"),
    (["sender", "block", "s1", "no-at-sign"], "invalid address"),
    (["sender", "list", "nobody"], "nobody"),
    (["buyer", "add", "b1", "other@buyer.example"], "exists"),
    (["buyer", "add", "b2", "jane@buyer.test"], "invalid address"),
    (["buyer", "add", "b/2", "jane@buyer.example"], "invalid buyer id"),
    (["optout", "set", "nobody"], "nobody"),
    (["optout", "clear", "nobody"], "nobody"),
    (["order", "add", "o9", "--seller", "nobody", "--buyer", "b1"], "nobody"),
    (["order", "add", "o9", "--seller", "s1", "--buyer", "nobody"], "nobody"),
    (["order", "add", "o/9", "--seller", "s1", "--buyer", "b1"], "invalid order id"),
    (["order", "add", "o9", "--seller", "s1", "--buyer", "b1", "--status", "lost"],
     "--status"),
    (["order", "add", "o9", "--seller", "s1", "--buyer", "b1", "--status", "completed",
      "--completed-at", "2024-13-01"], "invalid date"),
    (["order", "add", "o9", "--seller", "s1", "--buyer", "b1", "--status", "completed",
      "--completed-at", "yesterday"], "invalid date"),
    (["order", "add", "o9", "--seller", "s1", "--buyer", "b1", "--status", "completed",
      "--completed-at", "2999-01-01"], "future"),
    (["order", "add", "o9", "--seller", "s1", "--buyer", "b1", "--status", "shipped",
      "--completed-at", "2024-01-01"], "only allowed with status completed"),
    (["order", "add", "302-4418760-1193825", "--seller", "s1", "--buyer", "b1",
      "--status", "cancelled", "--completed-at", "2024-01-01"], "completed"),
    (["order", "find", "someone@elsewhere.example"], "not an alias of relay.example"),
    (["order", "find", "aaaaaaaaaaaaaaaaaaaa@relay.example"], "unknown alias"),
    (["order", "find", "not-an-address"], "not an alias"),
    (["alias", "show", "--seller", "s1", "--buyer", "nobody"], "nobody"),
    (["alias", "show", "--seller", "nobody", "--buyer", "b1"], "nobody"),
    (["alias", "revoke", "someone@elsewhere.example"], "not an alias"),
    (["alias", "revoke", "aaaaaaaaaaaaaaaaaaaa@relay.example"], "unknown alias"),
    (["messages", "list", "--since", "last week"], "invalid date"),
    (["messages", "list", "--seller", "nobody"], "nobody"),
    (["messages", "list", "--limit", "0"], "--limit"),
    (["messages", "show", "nope"], "nope"),
    (["report", "add", "nope", "--by", "buyer", "--reason", "spam"], "nope"),
    (["report", "add", "msg-1", "--by", "admin", "--reason", "spam"], "--by"),
    (["report", "add", "msg-1", "--by", "buyer", "--reason", "   "], "empty"),
    (["report", "list", "--status", "closed"], "--status"),
    (["report", "resolve", "99"], "99"),
    (["report", "resolve", "one"], "REPORT_ID"),
    (["order", "import", "missing.csv"], "missing.csv"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUT, ids=[" ".join(a)[:60]
                                                               for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_changes_nothing(seeded, args, fragment):
    before = seeded.snapshot()
    line = one_line_error(seeded(*args, ok=False))
    assert fragment in line
    assert seeded.snapshot() == before


def test_resolving_twice_is_refused(seeded):
    seeded("report", "add", "msg-1", "--by", "buyer", "--reason", "spam")
    seeded("report", "resolve", "1", "--note", "first")
    before = seeded.snapshot()
    assert "already resolved" in one_line_error(seeded("report", "resolve", "1", "--note",
                                                       "second", ok=False))
    assert seeded.snapshot() == before


def test_json_output_is_json_only(seeded):
    for args in (["seller", "show", "s1"], ["sender", "list", "s1"],
                 ["messages", "list"], ["messages", "show", "msg-1"], ["report", "list"],
                 ["alias", "show", "--seller", "s1", "--buyer", "b1"]):
        result = seeded(*args, "--json")
        json.loads(result.stdout)  # raises if anything but JSON is on stdout
