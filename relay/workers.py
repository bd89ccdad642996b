"""`relay serve --workers N`: N processes on the same listeners, one node using all its cores.

Each worker binds with SO_REUSEPORT, so the kernel spreads connections over them; they
share the SQLite database in WAL mode. The parent only supervises: it forwards SIGTERM or
SIGINT, waits for every worker's clean shutdown, and stops the others if one dies.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable

from relay.logs import get_logger


def run(workers: int, serve_one: Callable[[], None]) -> int:
    """Run ``serve_one`` in ``workers`` child processes; the exit status of the group."""
    ctx = multiprocessing.get_context("fork")  # inherit the parsed config, no re-import
    children = [ctx.Process(target=_child, args=(serve_one,), name=f"relay-worker-{i}")
                for i in range(workers)]
    stopping = False

    def forward(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    log = get_logger()
    try:
        for child in children:
            child.start()
        log.info("relay.workers", workers=workers, pids=[c.pid for c in children])
        status = 0
        remaining = list(children)
        while remaining:
            multiprocessing.connection.wait([c.sentinel for c in remaining])
            for child in [c for c in remaining if not c.is_alive()]:
                remaining.remove(child)
                if child.exitcode and not stopping:
                    log.error("relay.worker_died", pid=child.pid, exitcode=child.exitcode)
                    status = 1
                    forward(signal.SIGTERM, None)
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _child(serve_one: Callable[[], None]) -> None:
    # the parent's forwarding handlers must not run here; each worker installs its own
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    serve_one()
