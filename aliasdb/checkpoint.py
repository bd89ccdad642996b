"""WAL checkpoints from a thread of their own, for the daemon's SQLite connection.

SQLite checkpoints by itself inside a commit once the WAL holds 1,000 pages: the commit
that crosses the line copies them into the database file and fsyncs it, a stall of several
milliseconds for every session of the event loop the commit runs on. The daemon turns that
off on its connection and checkpoints here instead, on a connection of its own; sqlite3
lets go of the GIL while it works, so the loop goes on meanwhile. PASSIVE, as SQLite's own
are: it never waits for readers or writers, and the next pass takes what it left.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path

INTERVAL_S = 1.0
_log = logging.getLogger(__name__)


class WalCheckpointer:
    def __init__(self, path: str | Path, interval: float = INTERVAL_S) -> None:
        self.interval = interval
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 1000")
        self._lock = threading.Lock()  # the thread's passes and a caller's share the connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def checkpoint(self) -> tuple[int, int, int]:
        """One pass: (busy, frames in the WAL, frames now in the database file)."""
        with self._lock:
            busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, frames, done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # another process's checkpoint, a full disk: retry
                _log.warning("WAL checkpoint failed: %s", exc)

    def stop(self) -> None:
        """Stop the thread, then one last pass, so a clean shutdown leaves a short WAL."""
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self.checkpoint()
        self._conn.close()
