"""The processes the benchmark starts: start in their own process group, wait for the port,
read CPU and memory from /proc, and stop them (SIGTERM, then SIGKILL) whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int | None = None
    log: Path | None = None
    children: list[Proc] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu(self) -> float:
        """utime + stime of the process (all its threads), in seconds."""
        return cpu_seconds(self.pid)

    def status(self, key: str) -> int:
        """A kB field of /proc/<pid>/status (VmRSS, VmHWM), in bytes."""
        return proc_status(self.pid, key)

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux clear_refs 5); False if not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (the state) on: field N is at index N - 3."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15


def reaped_cpu(pid: int) -> float:
    """utime + stime of the children ``pid`` has waited for (cutime + cstime): what processes
    that have exited used, which group_cpu no longer sees."""
    fields = stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime: fields 16 and 17


def machine_busy() -> float:
    """CPU seconds all processes of the machine have run (user + system, every core).

    Interrupt and softirq time (where the kernel does much of the loopback TCP work) is
    left out: it belongs to the benchmark's own traffic, not to someone else's load.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / CLK_TCK


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (a server and any workers it forked)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(int(entry.name))
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp
            pids.append(int(entry.name))
    return pids


def group_cpu(pgid: int) -> float:
    total = 0.0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def group_rss(pgid: int) -> int:
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError, KeyError):
            total += proc_status(pid, "VmRSS")
    return total


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def start(name: str, argv: list[str], *, log: Path, env: dict | None = None,
          cwd: Path | None = None, port: int | None = None) -> Proc:
    """Start ``argv`` in a new session (its own process group), output to ``log``."""
    with open(log, "wb") as out:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, **(env or {})}, cwd=cwd)
    return Proc(name, popen, port, log)


def wait_port(proc: Proc, timeout: float = 30.0) -> None:
    """Return once ``proc.port`` accepts a connection (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n"
                               f"{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", proc.port), timeout=1) as sock:
                sock.settimeout(2)
                greeting = sock.recv(512)  # a listener that answers, not just a backlog
                with contextlib.suppress(OSError):
                    sock.sendall(b"QUIT\r\n")
                    sock.recv(512)
                if greeting.startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on port {proc.port} within {timeout:.0f} s:"
                       f"\n{proc.tail()}")


def stop(proc: Proc | None, timeout: float = 10.0) -> int | None:
    """SIGTERM to the process group, SIGKILL after ``timeout``; the exit code.

    The leader is waited for without being reaped, so its group id cannot be reused
    before the rest of the group (worker processes, if any) is killed too.
    """
    if proc is None:
        return None
    if proc.popen.returncode is not None:
        return proc.popen.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid == proc.pid:
            break
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.popen.wait(10)


def python() -> str:
    return sys.executable
