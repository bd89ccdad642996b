"""Results: per-server statistics summed over rounds, and the Markdown the run prints and
writes to scripts/bench-results.md."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from benchlib.loadgen import LoadResult


@dataclass
class Stats:
    """One server under one load, summed over the rounds it ran."""

    label: str
    ok: int = 0
    window: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    server_cpu: float = 0.0
    sink_cpu: float = 0.0
    sink_msgs: int = 0
    sink_signed: int = 0
    client_cpu: float = 0.0
    machine_cpu: float = 0.0  # every process of the machine, every core
    db: str = ""  # a database server of its own (PostgreSQL): its CPU is counted apart
    db_cpu: float = 0.0
    rounds: list[float] = field(default_factory=list)  # msg/s of each round

    def add(self, result: LoadResult) -> None:
        s, e = result.start, result.end
        self.ok += result.ok
        self.window += result.window
        self.latencies.extend(result.latencies)
        self.errors.update(result.errors)
        self.server_cpu += e["server"] - s["server"]
        self.sink_cpu += e["sink"] - s["sink"]
        self.sink_msgs += e["sink_msgs"] - s["sink_msgs"]
        self.sink_signed += e["sink_signed"] - s["sink_signed"]
        self.client_cpu += e["client"] - s["client"]
        self.machine_cpu += e["machine"] - s["machine"]
        self.db_cpu += e.get("db", 0.0) - s.get("db", 0.0)
        self.rounds.append(result.rate)

    @property
    def rate(self) -> float:
        return self.ok / self.window if self.window else 0.0

    def p(self, q: float) -> float:
        """The q-th percentile latency in ms (nearest rank)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q / 100 * len(ordered)))
        return ordered[rank - 1] * 1000

    @property
    def elsewhere(self) -> float:
        """Cores that other processes than the server, sink and client kept busy."""
        rest = (self.machine_cpu - self.server_cpu - self.sink_cpu - self.client_cpu
                - self.db_cpu)
        return max(0.0, rest) / self.window if self.window else math.nan

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def per_msg(self, seconds: float, count: int | None = None) -> float:
        count = self.ok if count is None else count
        return seconds / count * 1000 if count else math.nan

    @property
    def spread(self) -> str:
        if len(self.rounds) < 2:
            return ""
        digits = 0 if min(self.rounds) >= 100 else 1
        return f"{min(self.rounds):.{digits}f}-{max(self.rounds):.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:,.{digits}f}"


def main_table(rows: list[Stats], concurrency: int) -> list[str]:
    lines = [
        "| server | msg/s | per round | p50 ms | p95 ms | p99 ms | errors | server CPU ms/msg "
        "| sink CPU ms/msg | client CPU ms/msg | other processes, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        server_cpu = fmt(row.per_msg(row.server_cpu), 2)
        if row.db:  # the relay's own + the database server's
            server_cpu += f" + {fmt(row.per_msg(row.db_cpu), 2)} {row.db}"
        lines.append(
            f"| {row.label} | {fmt(row.rate, 0)} | {row.spread} | {fmt(row.p(50), 2)} | "
            f"{fmt(row.p(95), 2)} | {fmt(row.p(99), 2)} | {row.errors_total} | "
            f"{server_cpu} | "
            f"{fmt(row.per_msg(row.sink_cpu, row.sink_msgs), 2)} | "
            f"{fmt(row.per_msg(row.client_cpu), 2)} | {fmt(row.elsewhere, 2)} |")
    return lines


def size_table(sizes: list[tuple[str, int, Stats, Stats]]) -> list[str]:
    lines = [
        "| message | bytes | bare msg/s | relay msg/s | ratio relay/bare | bare CPU ms/msg "
        "| relay CPU ms/msg | bare p99 ms | relay p99 ms | messages (bare/relay) "
        "| other processes, cores (bare/relay) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, size, bare, relay in sizes:
        lines.append(
            f"| {name} | {size:,} | {fmt(bare.rate, 0)} | {fmt(relay.rate, 0)} | "
            f"{fmt(ratio(relay.rate, bare.rate), 2)} | {fmt(bare.per_msg(bare.server_cpu), 2)} | "
            f"{fmt(relay.per_msg(relay.server_cpu), 2)} | {fmt(bare.p(99), 1)} | "
            f"{fmt(relay.p(99), 1)} | {bare.ok}/{relay.ok} | "
            f"{fmt(bare.elsewhere, 2)}/{fmt(relay.elsewhere, 2)} |")
    return lines


def errors_lines(rows: list[Stats]) -> list[str]:
    lines = []
    for row in rows:
        for what, count in row.errors.most_common(8):
            lines.append(f"- {row.label}: {count} x {what}")
    return lines


def met(value: float, limit: float, *, at_least: bool) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    ok = value >= limit if at_least else value <= limit
    return "met" if ok else "NOT met"


@dataclass
class Drains:
    """Postfix's rounds from the start of the load (warm-up included) to its empty queue."""

    seconds: list[float] = field(default_factory=list)  # waited after each window
    cpu: float = 0.0  # every process of the instance
    delivered: int = 0  # messages the sink received

    def add(self, waited: float, start: dict, end: dict) -> None:
        self.seconds.append(waited)
        self.cpu += end["server"] - start["server"]
        self.delivered += end["sink_msgs"] - start["sink_msgs"]


def postfix_lines(row: Stats | None, drains: Drains, absent: str) -> list[str]:
    """What the Postfix row means, or why there is none."""
    if row is None:
        return [f"postfix: {absent}: no Postfix row."]
    return [
        "Postfix: a private instance (its own config, queue and data directories under the "
        "benchmark's temporary folder; `relayhost` the sink, the buyer aliases of the seeded "
        "database in `virtual_alias_maps`, the seller addresses in `sender_canonical_maps`, "
        "no DNS). Its `250` means queued, not delivered: it accepted "
        f"{row.ok:,} messages in the windows ({fmt(row.rate, 0)} msg/s) and delivered "
        f"{row.sink_msgs:,} to the sink in the same time ({fmt(row.sink_msgs / row.window, 0)} "
        "msg/s); after each of its rounds its queue was left to drain ("
        f"{', '.join(f'{s:.1f}' for s in drains.seconds)} s) before the next server's. Its "
        "CPU is that of all its processes (master, smtpd, cleanup, trivial-rewrite, qmgr, "
        "smtp, postlogd, ...), including those that exited; the table's figure is the "
        "window's, over the messages accepted in it. From the start of its load to its empty "
        f"queue it used {fmt(row.per_msg(drains.cpu, drains.delivered), 2)} ms per message "
        f"delivered ({drains.delivered:,} messages, warm-up included).",
    ]


def postfix_target(relay: Stats, row: Stats | None, absent: str) -> tuple[str, str, str]:
    name = "full-chain throughput ahead of Postfix"
    if row is None:
        return name, f"postfix {absent}", "n/a"
    ahead = ratio(relay.rate, row.rate)
    return (name, f"{fmt(relay.rate, 0)} vs {fmt(row.rate, 0)} msg/s ({fmt(ahead, 2)} x)",
            met(ahead, 1.0, at_least=True))
