"""Debian's Postfix as a third server: a private instance relaying the same load to the sink.

Everything lives in one folder of the benchmark's temporary directory: its own
config_directory (main.cf, master.cf, the lookup tables), queue_directory and
data_directory; the system's instance (/etc/postfix) is neither read nor started.
`postfix -c DIR check` makes the queue with the ownerships Postfix wants (mail_owner
`postfix`, group `postdrop`), then the master daemon runs in the foreground as a child of the
benchmark, like `postfix start-fg`, in a process group of its own, so the benchmark starts,
measures and stops it like the other servers.

The work Postfix does is the relay's minus the content: the recipient, a buyer alias of the
seeded pairs, becomes the buyer's real address (`virtual_alias_maps`, also checked at RCPT,
so an unknown alias is refused as the relay refuses it) and the seller's address, in the
envelope and the From: header, becomes a seller alias (`sender_canonical_maps`, one per
seller address: unlike the relay's, Postfix's look-up cannot depend on the recipient).
Both tables are built with postmap from the relay's own seeded database.
Postfix answers `250` once the message is queued and delivers it afterwards, from
`relayhost = [127.0.0.1]:SINK`: the sink's count shows what was delivered, and
`drain()` waits for the queue to empty.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from pathlib import Path

from benchlib import procs

POSTFIX = Path("/usr/sbin/postfix")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# Debian's master.cf services that relaying uses, with chroot off (no copies of /etc in the
# queue folder); the smtpd listener is added on the instance's own port.
MASTER_CF = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
showq     unix  n       -       n       -       -       showq
postlog   unix-dgram n  -       n       -       1       postlogd
"""

BUYER_ALIASES = """
    SELECT a.token, b.address FROM aliases a
    JOIN pairs p ON p.id = a.pair_id JOIN buyers b ON b.id = p.buyer_id
    WHERE a.role = 'buyer' AND a.revoked_at IS NULL"""
# each enabled seller address -> the seller alias of that seller's first pair
SELLER_ALIASES = """
    SELECT s.address, (SELECT a.token FROM pairs p JOIN aliases a ON a.pair_id = p.id
                       WHERE p.seller_id = s.seller_id AND a.role = 'seller'
                         AND a.revoked_at IS NULL ORDER BY p.id LIMIT 1)
    FROM senders s WHERE s.status = 'enabled'"""


def installed() -> bool:
    return POSTFIX.exists()


def version() -> str:
    return _run(["postconf", "-d", "-h", "mail_version"]).strip()


def _run(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


class Instance:
    def __init__(self, work: Path, port: int, sink_port: int, database: Path,
                 alias_domain: str) -> None:
        self.work = work
        self.conf = work / "etc"
        self.queue = work / "queue"
        self.log = work.parent / "postfix.log"  # beside the other servers' logs
        self.port = port
        self.sink_port = sink_port
        self.database = database
        self.alias_domain = alias_domain

    def configure(self) -> None:
        """main.cf, master.cf, the two tables and the queue, checked by `postfix check`."""
        # the daemons run as `postfix`: they must reach the queue and the tables
        os.chmod(self.work.parent, os.stat(self.work.parent).st_mode | 0o111)
        for folder in (self.conf, self.queue):
            folder.mkdir(parents=True, mode=0o755)
        table = _run(["postconf", "-d", "-h", "default_database_type"]).strip()
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": self.work / "data",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": self.log,
            "maillog_file_prefixes": self.work.parent,
            "myhostname": "postfix.example",  # no look-up of the machine's name
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",  # nothing is delivered here
            "local_transport": "error:no local delivery",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "smtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",  # disable_dns_lookups, as it is now named
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "virtual_alias_maps": f"{table}:{self.conf / 'virtual'}",
            "sender_canonical_maps": f"{table}:{self.conf / 'senders'}",
            "local_header_rewrite_clients": "permit_mynetworks",  # rewrite From: too
        }
        (self.conf / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in settings.items()))
        (self.conf / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + MASTER_CF)
        self.build_tables(table)
        _run([str(POSTFIX), "-c", str(self.conf), "check"])

    def build_tables(self, table: str) -> None:
        domain = self.alias_domain
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
        with contextlib.closing(connection) as db:
            virtual = [f"{domain} virtual alias domain"]  # unknown aliases: 550 at RCPT
            virtual += [f"{token}@{domain} {address}"
                        for token, address in db.execute(BUYER_ALIASES)]
            senders = [f"{address} {token}@{domain}"
                       for address, token in db.execute(SELLER_ALIASES) if token]
        for name, lines in (("virtual", virtual), ("senders", senders)):
            (self.conf / name).write_text("\n".join(lines) + "\n")
            _run(["postmap", "-c", str(self.conf), f"{table}:{self.conf / name}"])

    def argv(self) -> list[str]:
        """The master daemon in the foreground (it stays in the caller's process group)."""
        daemons = _run(["postconf", "-c", str(self.conf), "-h", "daemon_directory"]).strip()
        return [f"{daemons}/master", "-c", str(self.conf)]

    def queued(self) -> int:
        return sum(len(files) for name in QUEUES
                   for _, _, files in os.walk(self.queue / name))

    def drain(self, timeout: float = 120.0) -> float:
        """Wait until the queue is empty (all delivered to the sink); the seconds waited."""
        started = time.monotonic()
        while self.queued():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"Postfix still has {self.queued()} messages queued after "
                                   f"{timeout:.0f} s:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return time.monotonic() - started


def cpu(pgid: int) -> float:
    """CPU of every process of the instance: those running (master, smtpd, cleanup, qmgr,
    trivial-rewrite, smtp, ...) and those that have exited (a cleanup or smtpd process ends
    after max_use uses), which the master has reaped."""
    return procs.group_cpu(pgid) + procs.reaped_cpu(pgid)
