"""Nothing lost, nothing doubled: concurrent clients against a next hop that misbehaves.

The next hop (tests.smtp_harness.FaultyHandler / CuttingSMTP) answers 451 to some
messages, 554 to others, hangs up after the final dot, hangs up in the middle of DATA, or
never answers. It commits a message only when it answers 250, as an MTA does when its
queue file is written. The promise checked: every message the relay answered 250 is at
the next hop exactly once, and no message it answered 4xx/5xx (or not at all) is there.

Why a stalled next hop cannot break this: the relay gives up on it after
`delivery.timeout` by closing the connection, before it has answered 250, so that
transaction is void on the next hop; the relay answers 451 and the client retries. (The
one window SMTP itself leaves, RFC 1047, is a next hop that commits and then fails to
answer in time: then the retry makes a duplicate, never a loss.)
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import smtplib
import subprocess
import sys
import threading
from collections import Counter

from aliasdb import Store
from relay import cli as relay_cli
from tests.conftest import ORDER, SELLER_ADDR, seed
from tests.smtp_harness import REPO, RawClient, free_port, make_faulty, write_config

CLIENTS = 4
PER_CLIENT = 60
MARKER = re.compile(rb"marker=([a-z0-9-]+)")
ORDER_WITHOUT_CONTENT = ["relay_control", "known_alias", "seller_status",
                         "authorized_sender", "order_reference"]


def fault_for(i: int) -> str:
    if i % 10 == 3:
        return "tempfail"
    if i % 10 == 7:
        return "drop"
    if i % 20 == 11:
        return "cut"
    if i % 15 == 5:
        return "reject"
    if i in (16, 44):
        return "stall"
    return ""


EXPECTED = {"": 250, "tempfail": 451, "drop": 451, "cut": 451, "stall": 451, "reject": 550}


def message(to: str, marker: str, fault: str) -> bytes:
    return (f"From: Owen <{SELLER_ADDR}>\r\nTo: {to}\r\n"
            f"Subject: Your order {ORDER} has shipped\r\n"
            f"Message-ID: <{marker}@seller.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Hi,\r\n\r\nyour parcel is on its way.\r\n\r\nmarker={marker} fault={fault}\r\n"
            + "padding line so that the message spans several packets\r\n" * 40).encode()


def send_one(conn: smtplib.SMTP, alias: str, marker: str, fault: str) -> int:
    conn.ehlo_or_helo_if_needed()
    code, _ = conn.mail(SELLER_ADDR)
    if code != 250:
        return code
    code, _ = conn.rcpt(alias)
    if code != 250:
        return code
    return conn.data(message(alias, marker, fault))[0]


def at_sink(sink) -> Counter:
    return Counter(m.decode() for out in sink.messages for m in MARKER.findall(out.data))


def check_ledger(outcomes: dict[str, int | None], sink) -> None:
    """Every 250 exactly once at the next hop; nothing else there at all."""
    delivered = at_sink(sink)
    for marker, code in outcomes.items():
        if code == 250:
            assert delivered[marker] == 1, (marker, delivered[marker])
        else:
            assert delivered[marker] == 0, (marker, code)
    assert set(delivered) <= set(outcomes)
    assert sum(delivered.values()) == sum(1 for c in outcomes.values() if c == 250)


def test_faulty_next_hop_under_concurrent_load(relay_factory, sink):
    faults = make_faulty(sink)
    relay = relay_factory(delivery={"timeout": 1}, policy={"order": ORDER_WITHOUT_CONTENT},
                          limits={"data_timeout": 4, "messages_per_ip_per_minute": 100_000})
    alias = seed(relay.store).buyer_alias
    outcomes: dict[str, tuple[str, int | None]] = {}
    errors: list[BaseException] = []

    def client(cid: int) -> None:
        conn = None
        try:
            for i in range(PER_CLIENT):
                marker, fault = f"c{cid}-m{i}", fault_for(i)
                try:
                    if conn is None:
                        conn = smtplib.SMTP("127.0.0.1", relay.port, timeout=30,
                                            local_hostname="client.example")
                    outcomes[marker] = (fault, send_one(conn, alias, marker, fault))
                except (smtplib.SMTPException, OSError):
                    outcomes[marker] = (fault, None)
                    conn = None
            if conn is not None:
                conn.quit()
        except BaseException as exc:  # noqa: BLE001 -- reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)

    assert len(outcomes) == CLIENTS * PER_CLIENT
    unanswered = [m for m, (_, code) in outcomes.items() if code is None]
    assert unanswered == []  # the relay answered every message, whatever the next hop did
    for marker, (fault, code) in outcomes.items():
        assert code == EXPECTED[fault], (marker, fault, code)
    check_ledger({m: code for m, (_, code) in outcomes.items()}, sink)
    assert faults.seen >= CLIENTS * PER_CLIENT - CLIENTS * 3  # all but the cut ones arrived
    assert not relay.server.handler.inflight


# -- SIGTERM in the middle of the run --------------------------------------------------

class LogReader:
    """The daemon's JSON log lines, read off its stdout by a thread, waited on by event."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue

    def wait_for(self, event: str, timeout: float = 30) -> dict:
        for line in self.seen:
            if line.get("event") == event:
                return line
        while True:
            line = self.lines.get(timeout=timeout)
            self.seen.append(line)
            if line.get("event") == event:
                return line

    def drain(self) -> list[dict]:
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return self.seen


def test_sigterm_mid_run_loses_nothing_acknowledged(sink, tmp_path):
    faults = make_faulty(sink)
    port = free_port()
    home = tmp_path / "serve"
    home.mkdir()
    path = write_config(home, server={"listen": f"127.0.0.1:{port}"},
                        delivery={"mode": "smtp", "smarthost": f"127.0.0.1:{sink.port}",
                                  "timeout": 5},
                        dkim={"verify_inbound": "off"},
                        policy={"order": ORDER_WITHOUT_CONTENT},
                        limits={"data_timeout": 10, "messages_per_ip_per_minute": 100_000})
    relay_cmd = [sys.executable, "-m", "relay"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    init = subprocess.run([*relay_cmd, "init", "--config", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    store = Store.open(home / "relay.db")
    alias = seed(store).buyer_alias
    store.close()

    serve = [*relay_cmd, "serve", "--config", str(path)]
    if "workers" in {p.name for p in relay_cli.main.commands["serve"].params}:
        serve += ["--workers", "1"]  # one process: the signal goes straight to the daemon
    proc = subprocess.Popen(serve, cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        log = LogReader(proc.stdout)
        assert log.wait_for("relay.listening")["port"] == port

        outcomes: dict[str, int | None] = {}
        acked = threading.Semaphore(0)
        done = threading.Event()

        def client(cid: int) -> None:
            for i in range(10_000):
                if done.is_set():
                    return
                marker = f"s{cid}-m{i}"
                try:
                    with smtplib.SMTP("127.0.0.1", port, timeout=30,
                                      local_hostname="client.example") as conn:
                        outcomes[marker] = code = send_one(conn, alias, marker, "")
                except ConnectionRefusedError:
                    return  # the listener is closed: the daemon is going down
                except (smtplib.SMTPException, OSError):
                    outcomes[marker] = None
                    continue
                if code == 250:
                    acked.release()

        def held_client() -> None:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as conn:
                    outcomes["held"] = send_one(conn, alias, "held", "hold")
            except (smtplib.SMTPException, OSError):
                outcomes["held"] = None

        threads = [threading.Thread(target=client, args=(c,)) for c in range(3)]
        for t in threads:
            t.start()
        for _ in range(15):  # the run is under way
            assert acked.acquire(timeout=30)
        # one session has sent all of a message but its final dot ...
        late = RawClient(port)
        assert late.ehlo()[0] == 250
        assert late.cmd(f"MAIL FROM:<{SELLER_ADDR}>")[0] == 250
        assert late.cmd(f"RCPT TO:<{alias}>")[0] == 250
        assert late.cmd("DATA")[0] == 354
        late.send(message(alias, "late", ""))
        # ... and another message is in the middle of its delivery
        holder = threading.Thread(target=held_client)
        holder.start()
        assert faults.held.wait(30)

        proc.send_signal(signal.SIGTERM)
        log.wait_for("relay.stopping")
        code, text = late.cmd(".")  # the relay waits for the delivery, and starts no other
        assert (code, text[:5]) == (421, b"4.3.2"), text
        outcomes["late"] = code
        faults.release_hold(sink.loop)  # the next hop answers only now, during shutdown
        assert proc.wait(timeout=60) == 0
        assert late.at_eof()
        late.close()
        done.set()
        holder.join(30)
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    events = [line.get("event") for line in log.drain()]
    assert "relay.stopped" in events
    assert ("relay.running_as_root" in events) == (os.geteuid() == 0)
    assert outcomes["held"] == 250  # in flight at SIGTERM: finished and answered
    assert sum(1 for code in outcomes.values() if code == 250) >= 16
    check_ledger(outcomes, sink)
