"""Python-heap peaks in a server process, for the memory figures.

`install(path)` starts tracemalloc and makes SIGUSR1 append `<current> <peak>` (bytes
since the last SIGUSR1) to ``path`` and reset the peak. The benchmark signals before and
after one large message: the peak in between is what the message cost the Python heap,
which RSS (where freed memory stays resident and is reused) can understate.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path

ENV = "BENCH_TRACEMALLOC"


def install(path: str | os.PathLike) -> None:
    out = Path(path)
    tracemalloc.start(1)

    def report(signum, frame) -> None:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with out.open("a") as fh:
            fh.write(f"{current} {peak}\n")

    signal.signal(signal.SIGUSR1, report)


def install_from_env() -> None:
    if os.environ.get(ENV):
        install(os.environ[ENV])
