"""scripts/bench: the relay with its whole chain against a bare aiosmtpd proxy, in one run.

Everything runs on 127.0.0.1 in processes of its own: a sink (the next hop), the bare
passthrough proxy (the baseline) and the relay (`relay serve --workers 1`, smtp delivery
to the sink, every policy, rewrite, DKIM signing) over a seeded SQLite database, and the
same relay on a scratch PostgreSQL database seeded with the same pairs (--pg-url; dropped
at the end; skipped with a line saying why when there is no server). One load generator
drives them all, alternating rounds so a drift of the machine's speed hits both. When
Debian's Postfix is installed, a private instance of it relays the same load to the same
sink with alias rewriting only, as a third row (benchlib/postfix.py).
The last line printed is `ratio relay/bare: X.XX` (throughput, 4 KB, default concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from aliasdb.dialects import redact
from benchlib import loadgen, lookup, memtrace, pg, postfix, procs, profiling
from benchlib.messages import HEAP_SIZES, KB, SIZES, MessageFactory
from benchlib.report import (
    Drains,
    Stats,
    errors_lines,
    fmt,
    main_table,
    met,
    postfix_lines,
    postfix_target,
    ratio,
    size_table,
)
from benchlib.seed import ALIAS_DOMAIN, PairInfo, pair_infos, seed

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "scripts" / "bench-results.md"
MAIN_SIZE = "4KB"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="shorter windows and one round (about a minute)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="client connections at once (default 8)")
    parser.add_argument("--pairs", type=int, default=100_000,
                        help="buyer-seller pairs in the relay's database (default 100000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per server (3; quick 1)")
    parser.add_argument("--window", type=float,
                        help="seconds measured per round, 4 KB (8; quick 4)")
    parser.add_argument("--size-window", type=float,
                        help="seconds measured per server for 1 KB, 100 KB, 1 MB (4; quick 2)")
    parser.add_argument("--idle-connections", type=int,
                        help="idle sessions for the memory figure (200; quick 100)")
    parser.add_argument("--lookup-pairs", default="10000,1000000",
                        help="database sizes for the alias look-up micro-benchmark")
    parser.add_argument("--profile", nargs="?", const="auto", choices=("auto", "py-spy",
                                                                      "cprofile"),
                        help="profile the relay under an extra 4 KB window (auto: py-spy "
                             "if installed, else cProfile) and print where the time goes")
    parser.add_argument("--uvloop", action="store_true",
                        help="add a row: the relay on uvloop (needs uvloop installed)")
    parser.add_argument("--workers", type=int, default=0,
                        help="add a row: the relay with `--workers N` (N > 1)")
    parser.add_argument("--pg-url", default=pg.DEFAULT_URL,
                        help="PostgreSQL server for the relay-on-PostgreSQL row: a database "
                             "relay_bench_<random> is made there and dropped at the end "
                             f"(default {pg.DEFAULT_URL})")
    parser.add_argument("--no-postgres", action="store_true",
                        help="no relay-on-PostgreSQL row")
    parser.add_argument("--no-postfix", action="store_true",
                        help="no Postfix row, even when Postfix is installed")
    parser.add_argument("--output", type=Path, default=RESULTS,
                        help=f"Markdown results (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (configs, logs, databases)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.window = args.window or (4.0 if quick else 8.0)
    args.pg_window = args.window / 2 if quick else args.window  # quick stays quick
    args.size_window = args.size_window or (2.0 if quick else 4.0)
    args.warmup = 1.0 if quick else 1.5
    args.idle_connections = args.idle_connections or (100 if quick else 200)
    args.lookup_pairs = [int(n) for n in args.lookup_pairs.split(",") if n.strip()]
    if args.concurrency < 1 or args.pairs < 1 or args.rounds < 1:
        parser.error("--concurrency, --pairs and --rounds must be positive")
    if args.uvloop and importlib.util.find_spec("uvloop") is None:
        parser.error("--uvloop: uvloop is not installed (.venv/bin/pip install uvloop)")
    # a password in --pg-url stays out of the results
    shown = [f"{a.partition('=')[0]}={redact(a.partition('=')[2])}" if "=" in a else redact(a)
             for a in argv]
    args.command = " ".join(["scripts/bench", *shown])
    return args


def say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def toml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


@dataclass
class Server:
    label: str
    proc: procs.Proc
    stats: Stats = field(init=False)
    pairs: list[PairInfo] | None = None  # the load's pairs, if not the SQLite database's
    postfix: postfix.Instance | None = None  # Postfix: answers 250 once queued

    def __post_init__(self) -> None:
        self.stats = Stats(self.label)

    @property
    def port(self) -> int:
        return self.proc.port


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
        self.started: list[procs.Proc] = []
        self.notes: list[str] = []
        self.relay_bin = str(Path(sys.executable).parent / "relay")
        self.sink: procs.Proc | None = None
        self.pairs: list[PairInfo] = []
        self.factories = {name: MessageFactory(size) for name, size in SIZES.items()}
        self.heap_factories = {name: MessageFactory(size) for name, size in HEAP_SIZES.items()}
        self.tp_ratio = float("nan")
        self.loads = 0
        self.pg: pg.Scratch | None = None  # the scratch database, dropped in main()
        self.pg_cpu: pg.ServerCpu | None = None
        self.pg_seed_seconds = 0.0
        self.pg_version = ""
        self.postfix_absent = ""  # why there is no Postfix row
        self.postfix_drains = Drains()

    # -- processes -------------------------------------------------------------------

    def start(self, name: str, argv: list[str], port: int, **kwargs) -> procs.Proc:
        proc = procs.start(name, argv, log=self.tmp / f"{name}.log", port=port, **kwargs)
        self.started.append(proc)
        procs.wait_port(proc, timeout=60)
        return proc

    def stop(self, proc: procs.Proc) -> None:
        procs.stop(proc)
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            with contextlib.suppress(Exception):
                procs.stop(proc)
        self.started.clear()

    def start_sink(self) -> None:
        port = procs.free_port()
        self.sink = self.start("sink", [sys.executable, "-m", "benchlib.sink", str(port)], port)

    def start_bare(self, name: str = "bare", env: dict | None = None) -> Server:
        port = procs.free_port()
        proc = self.start(name, [sys.executable, "-m", "benchlib.bare", str(port),
                                 str(self.sink.port)], port, env=env)
        return Server("bare aiosmtpd proxy", proc)

    def serve_has_workers(self) -> bool:
        out = subprocess.run([self.relay_bin, "serve", "--help"], capture_output=True,
                             text=True, timeout=60)
        return "--workers" in out.stdout

    def start_relay(self, name: str, label: str, *, workers: int = 1, uvloop: bool = False,
                    cprofile: Path | None = None, env: dict | None = None,
                    database_url: str = "", keyholder: bool = True) -> Server:
        port = procs.free_port()
        config = self.write_config(name, port, database_url, keyholder)
        serve = ["serve", "--config", str(config)]
        if self.has_workers:
            serve += ["--workers", str(workers)]
        if uvloop or cprofile or env:
            wrapper = [sys.executable, "-m", "benchlib.run_relay"]
            if uvloop:
                wrapper.append("--uvloop")
            if cprofile:
                wrapper += ["--cprofile", str(cprofile)]
            argv = [*wrapper, "--", *serve]
        else:
            argv = [self.relay_bin, *serve]
        proc = self.start(name, argv, port, cwd=self.tmp, env=env)
        return Server(label, proc)

    # -- the relay's configuration and data --------------------------------------------

    def write_config(self, name: str, port: int, database_url: str = "",
                     keyholder: bool = True) -> Path:
        from relay.config import DEFAULTS  # what this version of the relay knows

        limits_wanted = {  # the load comes from one address at a rate no MX would see
            "max_connections": 5000,
            "max_connections_per_ip": 5000,
            "max_commands": 10_000_000,
            "messages_per_ip_per_minute": 100_000_000,
        }
        sections = {
            "server": {"listen": f"127.0.0.1:{port}", "hostname": "relay.example",
                       "alias_domain": "relay.example"},
            "database": ({"path": str(self.tmp / "relay.db")} if not database_url else
                         # path unused (url wins), but never the SQLite rows' database
                         {"url": database_url, "path": str(self.tmp / "unused.db")}),
            "dkim": {"key": str(self.tmp / "dkim.key"), "verify_inbound": "off",
                     "keyholder": keyholder},
            "delivery": {"mode": "smtp", "smarthost": f"127.0.0.1:{self.sink.port}",
                         "timeout": 30},
            "policy": {"content_rules": str(REPO / "conf" / "content_rules.toml"),
                       "contact_reasons": str(REPO / "conf" / "contact_reasons.toml")},
            "log": {"format": "json"},
            "limits": {k: v for k, v in limits_wanted.items()
                       if k in DEFAULTS.get("limits", {})},
        }
        lines = []
        for section, values in sections.items():
            if section not in DEFAULTS or not values:
                continue
            lines.append(f"[{section}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in values.items()
                      if key in DEFAULTS[section]]
        path = self.tmp / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def relay_init(self, config: Path) -> None:
        out = subprocess.run([self.relay_bin, "init", "--config", str(config)],
                             capture_output=True, text=True, timeout=120, cwd=self.tmp)
        if out.returncode != 0:
            raise RuntimeError(f"relay init failed:\n{out.stdout}{out.stderr}")

    def init_and_seed(self) -> None:
        self.relay_init(self.write_config("relay", procs.free_port()))
        started = time.perf_counter()
        secret = seed(self.tmp / "relay.db", self.args.pairs)
        self.seed_seconds = time.perf_counter() - started
        self.pairs = pair_infos(secret, self.args.pairs, self.args.pairs, random.Random(11))

    def start_postgres_relay(self) -> Server | None:
        """The relay on a scratch PostgreSQL database seeded with the same pairs (the same
        tokens: the same seller and buyer ids, from that database's own secret), or None
        with the reason said when there is no server to run on."""
        from relay.config import DEFAULTS

        if "url" not in DEFAULTS.get("database", {}):
            self.notes.append("this relay has no `[database] url`: no PostgreSQL row.")
            return None
        self.pg = pg.Scratch(self.args.pg_url)
        try:
            url = self.pg.create()
        except pg.Unreachable as exc:
            self.pg = None
            say(f"postgres: not reachable ({exc}), row skipped")
            self.notes.append(f"postgres: not reachable ({exc}), row skipped.")
            return None
        say(f"postgres: database {pg.with_database(redact(self.args.pg_url), self.pg.name)}")
        self.relay_init(self.write_config("relay-pg", procs.free_port(), url))
        started = time.perf_counter()
        secret = pg.seed(url, self.args.pairs)
        self.pg_seed_seconds = time.perf_counter() - started
        say(f"seeded {self.args.pairs:,} pairs into PostgreSQL in {self.pg_seed_seconds:.1f} s")
        # the same pairs in the same order as the SQLite relay's load, with the aliases
        # this database's secret gives them
        pairs = pair_infos(secret, self.args.pairs, self.args.pairs, random.Random(11))
        if [p.pair_id for p in pairs[:100]] != [p.pair_id for p in self.pairs[:100]]:
            raise RuntimeError("the PostgreSQL row would not draw the SQLite row's pairs")
        self.pg_cpu = pg.ServerCpu(url)
        self.pg_version = self.pg_cpu.version
        server = self.start_relay("relay-pg", "relay, full chain, 1 worker, PostgreSQL",
                                  database_url=url)
        server.pairs = pairs
        if self.pg_cpu.readable:
            server.stats.db = "PostgreSQL"
        else:
            self.notes.append("The PostgreSQL server is not on this machine: its CPU is not "
                              "counted in the PostgreSQL row.")
        return server

    def start_postfix(self) -> Server | None:
        """A private Postfix instance relaying to the sink over the SQLite database's aliases,
        or None with the reason said."""
        if self.args.no_postfix or not postfix.installed():
            self.postfix_absent = ("skipped (--no-postfix)" if self.args.no_postfix else
                                   f"not installed ({postfix.POSTFIX} not found)")
            say(f"postfix: {self.postfix_absent}, row skipped")
            return None
        port = procs.free_port()
        instance = postfix.Instance(self.tmp / "postfix", port, self.sink.port,
                                    self.tmp / "relay.db", ALIAS_DOMAIN)
        instance.configure()
        proc = self.start("postfix", instance.argv(), port)
        say(f"postfix: private instance on port {port} ({instance.work})")
        return Server(f"Postfix {postfix.version()}, queue + alias rewriting only", proc,
                      postfix=instance)

    def drop_postgres(self) -> None:
        if self.pg_cpu is not None:
            self.pg_cpu.close()
            self.pg_cpu = None
        if self.pg is not None and self.pg.name is not None:
            name = self.pg.name
            problem = self.pg.drop()
            say(f"postgres: {problem}" if problem else f"postgres: dropped database {name}")

    # -- measuring -------------------------------------------------------------------

    def probe_for(self, server: Server):
        sink = self.sink
        database = self.pg_cpu if server.stats.db else None
        server_cpu = postfix.cpu if server.postfix else procs.group_cpu

        async def probe() -> dict:
            messages, _, signed = await loadgen.xstat(sink.port)
            out = {"server": server_cpu(server.proc.pid), "sink": sink.cpu(),
                   "sink_msgs": messages, "sink_signed": signed,
                   "client": time.process_time(), "machine": procs.machine_busy()}
            if database is not None:
                out["db"] = database.read()
            return out

        return probe

    def load(self, server: Server, size: str, warmup: float, window: float,
             stats: Stats | None = None, min_messages: int = 0) -> Stats:
        # every load draws its own pairs: the same sequence twice would let the relay's
        # caches (re's compiled patterns, SQLite pages) see repeats real traffic does not
        self.loads += 1
        result = asyncio.run(loadgen.run_load(
            server.label, server.port, server.pairs or self.pairs, self.factories[size],
            concurrency=self.args.concurrency, warmup=warmup, window=window,
            min_messages=min_messages, probe=self.probe_for(server),
            seed=self.loads))
        if not server.proc.alive():
            raise RuntimeError(f"{server.label} exited with {server.proc.popen.returncode} "
                               f"during the {size} load:\n{server.proc.tail(20)}")
        if result.ok == 0:
            raise RuntimeError(f"{server.label}: no message accepted in the {size} window "
                               f"({dict(result.errors.most_common(5))}):\n"
                               f"{server.proc.tail(20)}")
        stats = stats if stats is not None else server.stats
        stats.add(result)
        return stats

    def check_delivers(self, server: Server) -> None:
        """One message first: a relay that refuses the load would measure nothing."""
        pair = (server.pairs or self.pairs)[0]
        before = asyncio.run(loadgen.xstat(self.sink.port))
        code, _ = asyncio.run(loadgen.one_message(server.port, pair, self.factories[MAIN_SIZE]))
        if server.postfix:
            server.postfix.drain()
        after = asyncio.run(loadgen.xstat(self.sink.port))
        if code != 250 or after[0] != before[0] + 1:
            raise RuntimeError(f"{server.label} did not deliver a test message (reply {code}, "
                               f"sink {after[0] - before[0]}):\n{server.proc.tail(20)}")

    # -- memory ----------------------------------------------------------------------

    def memory(self, server: Server, idle: int) -> dict:
        """RSS per idle connection and the peak for one 1 MB message, on a fresh process.

        Per connection is the slope from ``idle`` to ``2 * idle`` open sessions, so
        one-time costs and memory freed earlier (and reused) do not hide it. The 1 MB peak
        comes after a warm-up with small messages only, so the first large buffers count.
        """
        proc = server.proc
        out: dict = {"rss0": procs.group_rss(proc.pid)}

        async def hold() -> tuple[int, int]:
            writers = await loadgen.idle_sessions(server.port, idle)
            try:
                first = procs.group_rss(proc.pid)
                writers += await loadgen.idle_sessions(server.port, idle)
                return first, procs.group_rss(proc.pid)
            finally:
                for writer in writers:
                    writer.close()

        out["rss_n"], out["rss_2n"] = asyncio.run(hold())
        out["per_conn"] = (out["rss_2n"] - out["rss_n"]) / idle
        # warm: every code path loaded, caches filled, by small messages only
        self.load(server, MAIN_SIZE, 0.3, 1.0, stats=Stats("warm-up"))
        out["rss_warm"] = procs.group_rss(proc.pid)
        if proc.reset_peak():
            before = proc.status("VmRSS")
            code, seconds = asyncio.run(loadgen.one_message(server.port, self.pairs[1],
                                                            self.factories["1MB"]))
            out["peak_1mb"] = proc.status("VmHWM") - before
            out["code_1mb"] = code
            if code != 250:
                self.notes.append(f"{server.label}: the 1 MB memory probe got {code}")
        return out

    def heap_peak(self, start) -> dict:
        """Python-heap peaks (tracemalloc) while one 1 MB and then one 4 MB message pass,
        on a process of its own. The growth between the two is what a message costs per
        byte, i.e. how many times it is held; the rest is fixed (buffers, an HTML parser's
        arena) and does not grow with the message."""
        trace = self.tmp / f"heap-{self.loads}.txt"
        server = start({memtrace.ENV: str(trace)})
        peaks, codes = {}, []
        try:
            for pair in self.pairs[3:8]:  # warm, one 4 KB message at a time (tracing is slow)
                asyncio.run(loadgen.one_message(server.port, pair, self.factories[MAIN_SIZE]))
            for size, pair in (("1MB", self.pairs[2]), ("4MB", self.pairs[8])):
                before = self.signal_heap(server, trace)
                code, _ = asyncio.run(loadgen.one_message(server.port, pair,
                                                          self.heap_factories[size]))
                peaks[size] = self.signal_heap(server, trace)[1] - before[0]
                codes.append(code)
        finally:
            self.stop(server.proc)
        if codes != [250, 250]:
            self.notes.append(f"{server.label}: the heap probes got {codes}")
        per_byte = (peaks["4MB"] - peaks["1MB"]) / (HEAP_SIZES["4MB"] - HEAP_SIZES["1MB"])
        return {"heap_peak": peaks["1MB"], "heap_peak_4mb": peaks["4MB"],
                "copies": per_byte, "heap_fixed": peaks["1MB"] - per_byte * HEAP_SIZES["1MB"]}

    @staticmethod
    def signal_heap(server: Server, trace: Path) -> tuple[int, int]:
        lines = len(trace.read_text().splitlines()) if trace.exists() else 0
        os.kill(server.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if trace.exists():
                rows = trace.read_text().splitlines()
                if len(rows) > lines and rows[-1].count(" ") == 1:
                    current, peak = rows[-1].split()
                    return int(current), int(peak)
            time.sleep(0.02)
        raise RuntimeError(f"{server.label} did not report its heap (tracemalloc)")

    # -- the run ---------------------------------------------------------------------

    def run(self) -> str:
        args = self.args
        say(f"relay benchmark: {nproc()} cores, concurrency {args.concurrency}, "
            f"{args.pairs:,} pairs, {args.rounds} x {args.window:g} s per server"
            f"{' (quick)' if args.quick else ''}; working in {self.tmp}")
        self.has_workers = self.serve_has_workers()
        self.start_sink()
        self.init_and_seed()
        say(f"seeded {args.pairs:,} pairs in {self.seed_seconds:.1f} s")

        bare = self.start_bare()
        relay = self.start_relay("relay", "relay, full chain, 1 worker, SQLite")
        servers = [bare, relay]
        if "keyholder" in relay_defaults("dkim"):  # the same, with the keys in the worker
            servers.append(self.start_relay(
                "relay-inline", "relay, 1 worker, keys in the worker (`keyholder = false`)",
                keyholder=False))
        relay_postfix = self.start_postfix()
        if relay_postfix is not None:
            servers.append(relay_postfix)
        relay_pg = None if args.no_postgres else self.start_postgres_relay()
        if relay_pg is not None:
            servers.append(relay_pg)
        if args.uvloop:
            servers.append(self.start_relay("relay-uvloop", "relay on uvloop, 1 worker",
                                            uvloop=True))
        if args.workers > 1:
            if self.has_workers:
                servers.append(self.start_relay(
                    "relay-workers", f"relay, {args.workers} workers", workers=args.workers))
            else:
                self.notes.append("`relay serve` has no --workers option: no worker row.")
        for server in servers:
            self.check_delivers(server)

        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else servers[::-1]
            for server in order:
                start = asyncio.run(self.probe_for(server)()) if server.postfix else None
                self.load(server, MAIN_SIZE, args.warmup,
                          args.pg_window if server is relay_pg else args.window,
                          min_messages=100 // args.rounds)
                say(f"  round {round_no + 1} {server.label}: {server.stats.rounds[-1]:.0f} msg/s")
                if server.postfix:  # its queue delivered before the next server's round
                    waited = server.postfix.drain()
                    self.postfix_drains.add(waited, start, asyncio.run(self.probe_for(server)()))
        if relay_postfix is not None:
            self.stop(relay_postfix.proc)
        if relay_pg is not None:  # done with it: the rest is on SQLite
            self.stop(relay_pg.proc)
            self.drop_postgres()

        prof = self.profile(relay) if args.profile else None

        sizes = []
        for name, size in SIZES.items():
            if name == MAIN_SIZE:
                sizes.append((name, size, bare.stats, relay.stats))
                continue
            warm = 0.5 if size > 64 * KB else args.warmup
            row = []
            for server in (bare, relay):
                row.append(self.load(server, name, warm, args.size_window,
                                     stats=Stats(server.label), min_messages=60))
            say(f"  {name}: bare {row[0].rate:.0f}, relay {row[1].rate:.0f} msg/s")
            sizes.append((name, size, *row))
        sizes = [(name, len(self.factories[name].sample()), bare_stats, relay_stats)
                 for name, _, bare_stats, relay_stats in sorted(sizes, key=lambda i: i[1])]

        for server in servers:
            if server is not bare:
                self.stop(server.proc)
        self.stop(bare.proc)
        # memory on fresh processes: the load above has grown their heaps
        mem_relay = self.memory(self.start_relay("relay-mem", "relay (fresh)"),
                                args.idle_connections)
        mem_bare = self.memory(self.start_bare("bare-mem"), args.idle_connections)
        self.stop_all()
        self.start_sink()
        mem_relay.update(self.heap_peak(
            lambda env: self.start_relay("relay-heap", "relay (tracemalloc)", env=env)))
        mem_bare.update(self.heap_peak(lambda env: self.start_bare("bare-heap", env=env)))
        self.stop_all()
        say("memory measured; building the look-up databases")

        lookups = lookup.run(self.tmp, args.lookup_pairs)
        log_summary = self.relay_log_summary()
        return self.render(servers, sizes, mem_relay, mem_bare, lookups, prof, log_summary)

    def profile(self, relay: Server) -> profiling.Profile | None:
        window = max(self.args.window, 5.0)
        use_pyspy = self.args.profile == "py-spy" or (self.args.profile == "auto"
                                                      and profiling.pyspy_path())
        if use_pyspy:
            if not profiling.pyspy_path():
                raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
            out = self.tmp / "relay.pyspy.txt"
            spy = profiling.start_pyspy(relay.proc.pid, int(window + 2), out)
            try:
                self.load(relay, MAIN_SIZE, 1.0, window, stats=Stats("profiled"))
                spy.wait(timeout=window + 30)
            finally:
                if spy.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(spy.pid, signal.SIGINT)
                    spy.wait(10)
            if out.exists():
                return profiling.read_pyspy(out)
            self.notes.append("py-spy did not write a profile (ptrace not allowed?)")
            return None
        out = self.tmp / "relay.cprofile"
        server = self.start_relay("relay-cprofile", "relay under cProfile", cprofile=out)
        try:
            self.load(server, MAIN_SIZE, 1.0, window, stats=Stats("profiled"))
        finally:
            self.stop(server.proc)
        if out.exists():
            return profiling.read_cprofile(out)
        self.notes.append("cProfile wrote no profile")
        return None

    def relay_log_summary(self) -> list[str]:
        decided: Counter = Counter()
        problems: Counter = Counter()
        for log in sorted(self.tmp.glob("relay*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    if line.strip():
                        problems[f"{log.stem}: {line.strip()[:100]}"] += 1
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "message.decided":
                    decided[(event.get("decision"), event.get("policy"))] += 1
                elif event.get("level") in ("warning", "error", "critical"):
                    problems[f"{event.get('event')} ({event.get('level')})"] += 1
        lines = [", ".join(f"{n:,} {d}" + (f" (policy={p})" if p else "")
                           for (d, p), n in decided.most_common()) or "no decisions logged"]
        lines += [f"{n:,} x {what}" for what, n in problems.most_common(8)]
        return lines

    # -- report ----------------------------------------------------------------------

    def render(self, servers: list[Server], sizes, mem_relay: dict, mem_bare: dict,
               lookups: list[lookup.LookupResult], prof, log_summary: list[str]) -> str:
        args = self.args
        bare, relay = servers[0].stats, servers[1].stats
        on_postfix = next((s.stats for s in servers if s.postfix), None)
        tp_ratio = self.tp_ratio = ratio(relay.rate, bare.rate)
        p99_ratio = ratio(relay.p(99), bare.p(99))
        versions = ", ".join(f"{pkg} {metadata.version(pkg)}" for pkg in
                             ("aiosmtpd", "aiosmtplib", "dkimpy", "cryptography") if _has(pkg))
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        out = [
            "# Relay benchmark results",
            "",
            f"Made by `{args.command}` on {now}. "
            f"Machine: {nproc()} cores (nproc), {_cpu_model()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}; {versions}.",
            "",
            f"Load: {args.concurrency} concurrent client connections (raw asyncio SMTP, "
            f"100 messages per connection), each message to a random buyer alias of "
            f"{args.pairs:,} seeded pairs, from that seller's enabled address, naming the "
            f"pair's order; {args.rounds} alternating round(s) of {args.warmup:g} s warm-up + "
            f"{args.window:g} s measured per server (stretched up to 3x for a server until "
            f"{100 // args.rounds} messages completed). Client, server and sink share the "
            "machine's cores, as in production they would not: compare within one run. Only "
            "`250` replies count; CPU is utime+stime from /proc for the server's process "
            "group and the sink separately. The last column is the CPU that other processes of "
            "the machine used during the windows (user + system time from /proc/stat, less "
            "the server's, the sink's and the client's): more than a few tenths of a core "
            "means someone else's load skewed this run.",
            "",
            f"## Throughput and latency ({MAIN_SIZE} multipart/alternative: "
            f"{len(self.factories[MAIN_SIZE].sample()):,} bytes; concurrency {args.concurrency})",
            "",
            *main_table([s.stats for s in servers], args.concurrency),
            "",
            *postfix_lines(on_postfix, self.postfix_drains, self.postfix_absent),
            "",
            f"relay/bare: throughput **{fmt(tp_ratio, 2)}**, p99 latency "
            f"**{fmt(p99_ratio, 2)}**, server CPU per message "
            f"{fmt(ratio(relay.per_msg(relay.server_cpu), bare.per_msg(bare.server_cpu)), 2)}."
            f" DKIM-signed at the sink: {relay.sink_signed:,} of {relay.sink_msgs:,} relayed "
            "messages.",
            "",
        ]
        on_pg = next((s.stats for s in servers if s.proc.name == "relay-pg"), None)
        if on_pg is not None:
            db_ms = (f" + {fmt(on_pg.per_msg(on_pg.db_cpu), 2)} in PostgreSQL's processes"
                     if on_pg.db else "")
            out += [
                f"relay on PostgreSQL / relay on SQLite: {fmt(ratio(on_pg.rate, relay.rate), 2)}",
                "",
                f"Throughput **{fmt(ratio(on_pg.rate, relay.rate), 2)}**, p99 latency "
                f"**{fmt(ratio(on_pg.p(99), relay.p(99)), 2)}**; CPU per message: "
                f"{fmt(relay.per_msg(relay.server_cpu), 2)} ms on SQLite (in the relay's "
                f"process), {fmt(on_pg.per_msg(on_pg.server_cpu), 2)} ms in the relay{db_ms} "
                f"on PostgreSQL {self.pg_version} (a scratch database on "
                f"{pg.server_of(args.pg_url)}, same pairs, dropped at the end"
                + (f"; {fmt(args.pg_window, 0)} s windows in a quick run"
                   if args.pg_window != args.window else "") + ").",
                "",
            ]
        busiest = max([s.stats.elsewhere for s in servers]
                      + [st.elsewhere for _, _, bare_st, relay_st in sizes
                         for st in (bare_st, relay_st)])
        if busiest > 0.2:
            out += [f"**Warning:** other processes kept up to {busiest:.2f} cores busy "
                    "during the measured windows (another job?): absolute figures are low, "
                    "ratios less reliable. Run again on a quiet machine.", ""]
        errs = errors_lines([s.stats for s in servers])
        if errs:
            out += ["Errors (non-250 replies, connection failures):", "", *errs, ""]
        out += [
            "## Cost growth with the message size",
            "",
            "1 KB and 4 KB are text + HTML only; 100 KB adds a PDF and 1 MB a JPEG "
            "(base64), the way sellers send files. One window per server and size "
            f"({args.size_window:g} s, stretched up to 3x for a server until 60 messages "
            "completed; 4 KB: the rounds above).",
            "",
            *size_table(sizes),
            "",
            "## Alias look-ups against the database size",
            "",
            "`Store.resolve_alias` (the alias look-up: token to alias, one primary-key probe "
            "of the aliases table since schema 5) and `Store.recipient` (the relay's whole "
            "RCPT read since schema 6: the alias, its pair's live tokens, the seller with its "
            "senders and the buyer, in one statement over five B-trees), each on a fresh "
            "connection with the relay's settings, random existing tokens, median of 5 rounds "
            "of 20,000 after one warm-up pass.",
            "",
            "| pairs | aliases | database | µs per alias look-up | rounds µs | µs per RCPT read "
            "| build s |",
            "|---:|---:|---:|---:|---|---:|---:|",
        ]
        for res in lookups:
            per_rcpt = "-" if res.us_per_recipient is None else f"{res.us_per_recipient:.2f}"
            out.append(f"| {res.pairs:,} | {2 * res.pairs:,} | {res.db_bytes / 2**20:,.0f} MiB "
                       f"| {res.us_per_lookup:.2f} | "
                       f"{', '.join(f'{r:.2f}' for r in res.rounds)} | {per_rcpt} | "
                       f"{res.build_seconds:.1f} |")
        lookup_ratio = (ratio(lookups[-1].us_per_lookup, lookups[0].us_per_lookup)
                        if len(lookups) >= 2 else float("nan"))
        if len(lookups) >= 2:
            first, last = lookups[0], lookups[-1]
            rcpt = ("." if first.us_per_recipient is None else
                    f"; {fmt(ratio(last.us_per_recipient, first.us_per_recipient), 2)} x per "
                    "RCPT read.")
            out += ["", f"{last.pairs:,} / {first.pairs:,} pairs: "
                        f"**{fmt(lookup_ratio, 2)}** x the cost per alias look-up{rcpt}"]
        out += [
            "",
            "## Memory",
            "",
            "Fresh processes. Per idle connection: the RSS growth from "
            f"{args.idle_connections} to {2 * args.idle_connections} sessions open after EHLO, "
            "divided by their number. Then, after a warm-up with 4 KB messages, the peak RSS "
            "(VmHWM, reset through /proc/PID/clear_refs) while one 1 MB message passes, minus "
            "the RSS before it; RSS can understate it, since memory freed earlier stays "
            "resident and is reused. So the same 1 MB message also passes a fresh process "
            "with tracemalloc on (slower, so not the one timed), and then a 4 MB one: the "
            "Python heap's peak above its level before each message. How many times a "
            "message is held is the growth of that peak per byte from 1 MB to 4 MB; what "
            "does not grow with the message (socket buffers, the HTML parser's ~1 MB arena) "
            "is the fixed part. The bare proxy shows what aiosmtpd and aiosmtplib hold alone.",
            "",
            "| process | RSS at start | with "
            f"{args.idle_connections} / {2 * args.idle_connections} idle sessions "
            "| per idle connection | after warm-up | RSS peak extra, one 1 MB message "
            "| Python heap peak extra, 1 MB / 4 MB message | fixed part "
            "| = copies of the message |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, mem in (("relay", mem_relay), ("bare proxy", mem_bare)):
            peak = mem.get("peak_1mb")
            out.append(
                f"| {name} | {mem['rss0'] / 2**20:.1f} MiB | {mem['rss_n'] / 2**20:.1f} / "
                f"{mem['rss_2n'] / 2**20:.1f} MiB | {mem['per_conn'] / 1024:.1f} KiB | "
                f"{mem['rss_warm'] / 2**20:.1f} MiB | "
                + (f"{peak / 2**20:.2f} MiB | " if peak is not None
                   else "n/a (clear_refs not allowed) | ")
                + f"{mem['heap_peak'] / 2**20:.2f} / {mem['heap_peak_4mb'] / 2**20:.2f} MiB | "
                f"{mem['heap_fixed'] / 2**20:.2f} MiB | {mem['copies']:.2f} |")
        targets = [
            ("full-chain throughput >= 0.5 x bare proxy (1 worker)", f"{fmt(tp_ratio, 2)} x",
             met(tp_ratio, 0.5, at_least=True)),
            postfix_target(relay, on_postfix, self.postfix_absent),
            ("p99 latency <= 3 x bare proxy", f"{fmt(p99_ratio, 2)} x",
             met(p99_ratio, 3.0, at_least=False)),
            ("look-up at 1M pairs within 1.2 x of 10k", f"{fmt(lookup_ratio, 2)} x",
             met(lookup_ratio, 1.2, at_least=False)),
        ]
        copies = mem_relay["copies"]
        targets.append(("no message held in memory more than twice (growth of the Python-heap "
                        "peak per message byte, 1 MB to 4 MB)", f"{copies:.2f}",
                        met(copies, 2.0, at_least=False)))
        out += ["", "## Targets (issue 7)", "", "| target | measured | |", "|---|---:|---|"]
        out += [f"| {name} | {value} | {verdict} |" for name, value, verdict in targets]
        if prof is not None:
            out += ["", "## Profile", "", *profiling.markdown(prof)]
        out += [
            "",
            "## Notes",
            "",
            "- The relay runs with `[dkim] verify_inbound = \"off\"`: checking sellers' DKIM "
            "on the MX listener needs DNS, which the benchmark does not use (everything stays "
            "on 127.0.0.1). Outbound DKIM signing (RSA-2048) is on; by default a "
            "keyholder child of the worker holds the key and does the RSA operation "
            "(`relay/keyholder.py`), and its CPU is in the relay's figures (the process "
            "group's).",
            f"- The relay's database: {args.pairs:,} pairs ({max(1, args.pairs // 100):,} "
            "sellers with one enabled sender address each, one buyer per pair, both aliases "
            "of every pair, one shipped order per pair), seeded with direct SQL through the "
            f"Store's connection in {self.seed_seconds:.1f} s"
            + (f"; the same rows into PostgreSQL by COPY in {self.pg_seed_seconds:.1f} s "
               "(after `relay init` made the schema and the secret there)."
               if on_pg is not None else "."),
            "- `[limits]` are raised in the benchmark's config: the whole load comes from one "
            "address, far above the per-address rates an MX allows.",
            f"- Relay log: {log_summary[0]}.",
            *[f"- Relay log: {line}." for line in log_summary[1:]],
            *[f"- {note}" for note in self.notes],
        ]
        return "\n".join(out) + "\n"


def relay_defaults(section: str) -> dict:
    from relay.config import DEFAULTS  # what this version of the relay knows

    return DEFAULTS.get(section, {})


def nproc() -> int:
    return len(os.sched_getaffinity(0))


def _has(package: str) -> bool:
    try:
        metadata.version(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def terminate(signum, frame):  # unwind through the finally below
        raise KeyboardInterrupt

    # SIGINT too: a shell without job control starts background commands with it ignored
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    bench = Bench(args)
    try:
        text = bench.run()
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    except Exception as exc:
        say(f"benchmark failed: {exc}")
        for proc in bench.started:
            say(f"--- {proc.name} (log tail) ---\n{proc.tail(10)}")
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up itself is bounded
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.stop_all()
        bench.drop_postgres()  # after the relay using it has stopped
        if args.keep:
            say(f"kept {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    args.output.write_text(text)
    print(text)
    print(f"results written to {args.output}")
    print(f"ratio relay/bare: {bench.tp_ratio:.2f}")
    return 0
