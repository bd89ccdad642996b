"""Several relay nodes on one PostgreSQL database, and `relay db` to get there.

The cluster: two `relay serve --workers 1` processes on their own loopback ports, one
PostgreSQL database (a fresh schema), one DKIM key, one next hop (the sink). What one node
(or one node's CLI) writes, the other acts on for its next message. Skipped, with the
reason, when no PostgreSQL server is reachable (tests/pg.py); the `relay db` tests on
SQLite alone run everywhere.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aliasdb.migrations import LATEST, TABLES
from aliasdb.store import Store
from relay.cli import main
from relay.config import load
from tests.conftest import BUYER_ADDR, SELLER_ADDR, SELLER_INBOX
from tests.smtp_harness import REPO, Sink, free_port, write_config
from tests.test_e2e_policies import NOT_CRITICAL
from tests.test_e2e_relay import parsed, seller_message

RELAY = [sys.executable, "-m", "relay"]
START_TIMEOUT = 60


# -- `relay db` and `relay init` through the CLI -----------------------------------------------


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def ok(config: Path, *args: str) -> Result:
    result = invoke(config, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def cli_config(home: Path, url: str = "") -> Path:
    home.mkdir(parents=True, exist_ok=True)
    database = f'url = "{url}"\n' if url else 'path = "relay.db"\n'
    path = home / "relay.toml"
    path.write_text(f'[database]\n{database}\n[delivery]\nmaildir = "maildir"\n\n'
                    '[dkim]\nkey = "dkim.key"\n')
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def target_config(request, tmp_path) -> Path:
    """A config whose database is empty: an SQLite path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return cli_config(tmp_path / "target")
    return cli_config(tmp_path / "target", request.getfixturevalue("pg_url"))


def test_moving_a_single_node_database_with_export_and_import(tmp_path, target_config):
    source = cli_config(tmp_path / "single")
    ok(source, "init")
    ok(source, "seller", "add", "s1", "--name", "Shop", "--inbox", "in@seller.example")
    ok(source, "sender", "enable", "s1", "shop@seller.example")
    ok(source, "buyer", "add", "b1", "jane@buyer.example")
    ok(source, "order", "add", "o-1", "--seller", "s1", "--buyer", "b1")
    ok(source, "optout", "set", "b1")
    aliases = json.loads(ok(source, "alias", "show", "--seller", "s1", "--buyer", "b1",
                            "--json").stdout)
    dump = tmp_path / "export.jsonl"
    exported = json.loads(ok(source, "db", "export", str(dump), "--json").stdout)
    assert exported["counts"]["sellers"] == 1 and exported["counts"]["aliases"] == 2
    assert "exists" in one_line_error(invoke(source, "db", "export", str(dump)))
    ok(source, "db", "export", str(dump), "--force")

    migrated = ok(target_config, "db", "migrate").stdout
    assert f"schema version {LATEST} (migrated from 0)" in migrated
    assert "(up to date)" in ok(target_config, "db", "migrate").stdout
    shown = ok(target_config, "db", "import", str(dump)).stdout
    for table in TABLES:
        n = exported["counts"][table]
        assert any(line.split()[:5] == [table, str(n), str(n), str(n), "ok"]
                   for line in shown.splitlines()), (table, shown)
    assert "imported" in shown.splitlines()[-1]

    # the moved database is the same relay: the same secret, aliases, opt-out
    assert json.loads(ok(target_config, "alias", "show", "--seller", "s1", "--buyer", "b1",
                         "--json").stdout) == aliases
    moved = Store.from_config(load(target_config))
    assert moved.find_buyer("b1").opted_out
    assert moved.engine == ("postgresql" if "url" in target_config.read_text() else "sqlite")
    moved.close()
    assert "not empty" in one_line_error(invoke(target_config, "db", "import", str(dump)))


def test_import_refuses_a_file_that_is_no_export(tmp_path, target_config):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    assert "neither a relay export" in one_line_error(
        invoke(target_config, "db", "import", str(junk)))


def test_relay_init_on_postgresql(tmp_path, pg_url):
    config = cli_config(tmp_path / "node", pg_url)
    refused = invoke(config, "seller", "show", "s1")
    assert "not initialized" in one_line_error(refused)
    probe = Store.open(pg_url, migrate=False)
    assert probe.schema_version() == 0  # no schema created as a side effect
    first = ok(config, "init").stdout
    assert "created" in first and "alias secret: created" in first
    second = ok(config, "init").stdout
    assert "present" in second and "alias secret: present" in second
    assert probe.schema_version() == LATEST
    probe.close()
    assert not (tmp_path / "node" / "relay.db").exists()  # the url wins over the path


def test_database_url_must_be_postgresql(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text('[database]\nurl = "mysql://root:secret@db/relay"\n')
    line = one_line_error(invoke(config, "init"))
    assert "database.url" in line and "postgresql://" in line and "secret" not in line


# -- two relay nodes on one database ---------------------------------------------------------


def send(port: int, mail_from: str, rcpt: str, data: bytes) -> tuple[int, str]:
    """One SMTP transaction; the (code, text) of the answer that decided it."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=30) as c:
        c.ehlo()
        for code, text in (c.mail(mail_from), c.rcpt(rcpt)):
            if code != 250:
                return code, text.decode()
        code, text = c.data(data)
        return code, text.decode()


@dataclass
class Node:
    name: str
    config: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*RELAY, "serve", "--workers", "1", "--config", str(self.config)],
                cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the port answers once the node listens; no fixed sleep
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"node {self.name} did not listen within {START_TIMEOUT}s:\n"
                            f"{self.log.read_text()[-3000:]}")
            try:
                self.proc.wait(timeout=0.1)  # paces the retries; returns only if it died
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"node {self.name} exited with {self.proc.returncode}:\n"
                        f"{self.log.read_text()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def send(self, mail_from: str, rcpt: str, data: bytes) -> tuple[int, str]:
        return send(self.port, mail_from, rcpt, data)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`relay ...` as an operator runs it on this node: its own process and config."""
        done = subprocess.run([*RELAY, *args, "--config", str(self.config)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done


@dataclass
class Cluster:
    a: Node
    b: Node
    store: Store  # the test's own view of the shared database
    sink: Sink
    init_output: tuple[str, str]


@pytest.fixture(scope="module")
def cluster(pg_server, loop_thread, tmp_path_factory) -> Iterator[Cluster]:
    url = pg_server.new_url()
    root = tmp_path_factory.mktemp("cluster")
    sink = Sink(loop_thread)
    key = root / "shared-dkim.key"  # every node signs with the same key (one DNS record)
    nodes = []
    for name in ("a", "b"):
        home = root / name
        home.mkdir()
        port = free_port()
        config = write_config(
            home, server={"listen": f"127.0.0.1:{port}"}, database={"url": url},
            delivery={"mode": "smtp", "smarthost": f"127.0.0.1:{sink.port}"},
            dkim={"key": str(key), "verify_inbound": "off"},  # offline: no DNS look-ups
            policy={"strikes_to_suspend": 2})
        nodes.append(Node(name, config, port, home / "serve.log"))
    init = tuple(node.cli("init").stdout for node in nodes)
    store = Store.open(url)
    try:
        for node in nodes:
            node.start()
        yield Cluster(nodes[0], nodes[1], store, sink, init)
    finally:
        codes = [node.stop() for node in nodes]
        store.close()
        sink.close()
    assert codes == [0, 0], codes  # both nodes shut down cleanly


@dataclass
class Parties:
    seller: str
    buyer: str
    order: str
    seller_alias: str
    buyer_alias: str


def seed(store: Store, n: int) -> Parties:
    """A seller with an authorized address and an inbox, a buyer, an order: ids of test n."""
    seller, buyer, order = f"s{n}", f"b{n}", f"302-4418760-{n:07d}"
    store.add_seller(seller, f"Shop {n}", SELLER_INBOX)
    store.update_seller(seller, buyer_messages=True)
    store.set_sender(seller, SELLER_ADDR, "enabled")
    store.add_buyer(buyer, BUYER_ADDR, "Jane Buyer")
    store.upsert_order(order, seller, buyer, status="pending")
    tokens = store.aliases(store.pair(seller, buyer))
    return Parties(seller, buyer, order, f"{tokens['seller']}@relay.example",
                   f"{tokens['buyer']}@relay.example")


@pytest.fixture
def fresh(cluster) -> Cluster:
    cluster.sink.messages.clear()
    return cluster


def test_nodes_share_the_database_the_secret_and_nothing_local(fresh):
    first, second = fresh.init_output
    assert "alias secret: created" in first
    assert "alias secret: present" in second  # the second node found the first's secret
    for node in (fresh.a, fresh.b):
        assert not (node.config.parent / "relay.db").exists()
    assert fresh.store.secret  # the one the nodes derive aliases and VERP addresses from


def test_a_reply_through_b_threads_to_a_message_through_a(fresh):
    p = seed(fresh.store, 1)
    first = seller_message(p.buyer_alias, subject=f"Your order {p.order} has shipped",
                           msgid="<s-1@seller.example>")
    code, text = fresh.a.send(SELLER_ADDR, p.buyer_alias, first)
    assert code == 250, text
    [out] = fresh.sink.messages
    relay_msgid = parsed(out.data)["Message-ID"]
    assert out.rcpt_tos == [BUYER_ADDR] and relay_msgid.endswith("@relay.example>")

    reply = (f"From: Jane <{BUYER_ADDR}>\r\nTo: {p.seller_alias}\r\n"
             f"Subject: Re: Your order {p.order} has shipped\r\n"
             f"Message-ID: <b-1@mail.example>\r\nIn-Reply-To: {relay_msgid}\r\n"
             f"References: {relay_msgid}\r\n\r\nThanks!\r\n").encode()
    code, text = fresh.b.send(BUYER_ADDR, p.seller_alias, reply)
    assert code == 250, text
    back = fresh.sink.messages[1]
    assert back.rcpt_tos == [SELLER_INBOX]
    assert parsed(back.data)["In-Reply-To"] == "<s-1@seller.example>"
    assert "<s-1@seller.example>" in parsed(back.data)["References"]
    assert BUYER_ADDR not in back.data.decode()


def test_an_optout_set_through_one_nodes_cli_refuses_mail_on_the_other(fresh):
    p = seed(fresh.store, 2)
    hello = seller_message(p.buyer_alias, subject=f"About order {p.order}")
    assert fresh.b.send(SELLER_ADDR, p.buyer_alias, hello)[0] == 250
    fresh.a.cli("optout", "set", p.buyer)
    for node in (fresh.b, fresh.a):
        code, text = node.send(SELLER_ADDR, p.buyer_alias, hello)
        assert code == 550 and "policy=optout" in text, (node.name, text)
    fresh.b.cli("optout", "clear", p.buyer)
    code, text = fresh.a.send(SELLER_ADDR, p.buyer_alias, hello)
    assert code == 250, text
    assert len(fresh.sink.messages) == 2


def test_strikes_split_across_nodes_suspend_the_seller_on_both(fresh):
    p = seed(fresh.store, 3)
    misuse = seller_message(p.buyer_alias, subject=f"[Important] Refund for order {p.order}",
                            body=NOT_CRITICAL)
    code, text = fresh.a.send(SELLER_ADDR, p.buyer_alias, misuse)
    assert code == 250, text  # delivered, with a first strike (recorded by node A)
    assert len(fresh.store.strikes(p.seller)) == 1
    assert not fresh.store.seller(p.seller).suspended
    code, text = fresh.b.send(SELLER_ADDR, p.buyer_alias, misuse)
    assert code == 550 and "suspended" in text and "policy=optout" in text, text
    assert len(fresh.store.strikes(p.seller)) == 2  # node B counted node A's strike
    assert fresh.store.seller(p.seller).suspended
    plain = seller_message(p.buyer_alias, subject=f"About order {p.order}")
    for node in (fresh.a, fresh.b):
        code, text = node.send(SELLER_ADDR, p.buyer_alias, plain)
        assert code == 550 and "policy=seller_status" in text, (node.name, text)
    fresh.b.cli("seller", "reinstate", p.seller)
    code, text = fresh.a.send(SELLER_ADDR, p.buyer_alias, plain)
    assert code == 250, text
    assert len(fresh.sink.messages) == 2


def test_an_alias_revoked_through_one_node_is_unknown_on_the_other(fresh):
    p = seed(fresh.store, 4)
    hello = seller_message(p.buyer_alias, subject=f"About order {p.order}")
    assert fresh.b.send(SELLER_ADDR, p.buyer_alias, hello)[0] == 250
    fresh.a.cli("alias", "revoke", p.buyer_alias)
    code, text = fresh.b.send(SELLER_ADDR, p.buyer_alias, hello)
    assert code == 550 and "5.1.1" in text, text
