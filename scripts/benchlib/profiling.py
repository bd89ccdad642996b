"""Where the relay's time goes: py-spy samples (or a cProfile dump) summed three ways.

- by area: each sample goes to the innermost frame that belongs to a known part of the
  pipeline (SMTP server, parsing, policies, rewrite, DKIM, SQL...), so time in the standard
  library (re compiling a pattern, say) counts for the part that called it;
- by function, self time (innermost frame);
- by function, inclusive time (any frame of the sample), without the event-loop scaffolding
  that is in nearly every sample.
"""

from __future__ import annotations

import pstats
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# (substring of the frame's file, area); the first match wins
AREAS = [
    ("aiosmtpd/", "aiosmtpd (SMTP server side)"),
    ("aiosmtplib/", "aiosmtplib (delivery to the next hop)"),
    ("relay/dkim", "relay DKIM signing (dkimpy canonicalization + cryptography RSA)"),
    ("dkim/", "relay DKIM signing (dkimpy canonicalization + cryptography RSA)"),
    ("cryptography/", "relay DKIM signing (dkimpy canonicalization + cryptography RSA)"),
    ("aliasdb/", "aliasdb + sqlite3 (lookups, message record, threads)"),
    ("sqlite_utils/", "aliasdb + sqlite3 (lookups, message record, threads)"),
    ("policies/content", "content policy (text extraction + rules)"),
    ("policies/text", "content policy (text extraction + rules)"),
    ("selectolax", "content policy (text extraction + rules)"),
    ("phonenumbers/", "content policy (text extraction + rules)"),
    ("policies/", "other policies"),
    ("relay/rewrite", "anonymizing rewrite"),
    ("/email/", "email package (parse, headers, serialize)"),
    ("structlog/", "structlog logging"),
    ("/logging/", "structlog logging"),
    ("/json/", "json (logs, message record)"),
    ("relay/", "relay (pipeline, handler, facts, server)"),
    ("asyncio/", "asyncio event loop + streams"),
    ("uvloop/", "asyncio event loop + streams"),
    ("/concurrent/", "thread pool (to_thread)"),
    ("threading.py", "thread pool (to_thread)"),
]
SCAFFOLD_SHARE = 0.9  # inclusive shares above this are the loop itself, not information
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


OTHER = "other (standard library called from elsewhere)"


def area_of(path: str) -> str | None:
    for needle, area in AREAS:
        if needle in path:
            return area
    return None


def attributed(files: list[str]) -> str:
    """The area of the innermost frame (of ``files``, outermost first) that has one."""
    for file in reversed(files):
        area = area_of(file)
        if area is not None:
            return area
    return OTHER


def short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker.startswith("/lib/python3."):
                path = path.split("/", 1)[1] if "/" in path else path
            break
    return path


@dataclass
class Profile:
    source: str
    samples: float = 0.0
    areas: Counter = field(default_factory=Counter)
    self_time: Counter = field(default_factory=Counter)
    inclusive: Counter = field(default_factory=Counter)
    note: str = ""

    def share(self, value: float) -> float:
        return 100.0 * value / self.samples if self.samples else 0.0


def pyspy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_pyspy(pid: int, duration: int, out: Path, rate: int = 250) -> subprocess.Popen:
    return subprocess.Popen(
        [pyspy_path(), "record", "--pid", str(pid), "--duration", str(duration), "--rate",
         str(rate), "--format", "raw", "--output", str(out), "--nonblocking"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


def read_pyspy(path: Path) -> Profile:
    prof = Profile("py-spy (sampling, all threads, 250 Hz)")
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw)
            if match is None:
                frames.append((raw, ""))
            else:
                frames.append((match["func"], match["file"]))
        if not frames:
            continue
        prof.samples += n
        func, file = frames[-1]
        prof.areas[attributed([p for _, p in frames])] += n
        prof.self_time[f"{func} ({short(file)})"] += n
        for name in {f"{f} ({short(p)})" for f, p in frames}:
            prof.inclusive[name] += n
    return prof


def read_cprofile(path: Path) -> Profile:
    """cProfile covers the main thread only (the DKIM RSA in to_thread is not in it)."""
    stats = pstats.Stats(str(path))
    prof = Profile("cProfile (deterministic, main thread only; inflates call-heavy code)")
    total = max(stats.total_tt, 1e-9)
    prof.samples = total
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        name = f"{func} ({short(file)})"
        prof.self_time[name] += tt
        prof.inclusive[name] += ct
        prof.areas[area_of(file) or OTHER] += tt
    return prof


def markdown(prof: Profile, top: int = 20) -> list[str]:
    lines = [f"Profile of the relay under the 4 KB load: {prof.source}; "
             f"{prof.samples:.0f} {'samples' if 'py-spy' in prof.source else 's'} "
             "(shares of the relay's busy time).", ""]
    if prof.note:
        lines += [prof.note, ""]
    area_head = ("area (innermost frame of a known part; stdlib time goes to its caller)"
                 if "py-spy" in prof.source else "area (self time by file)")
    lines += [f"| {area_head} | share |", "|---|---:|"]
    for area, value in prof.areas.most_common():
        lines.append(f"| {area} | {prof.share(value):.1f}% |")
    lines += ["", "| function (self time) | share |", "|---|---:|"]
    for name, value in prof.self_time.most_common(top):
        lines.append(f"| `{name}` | {prof.share(value):.1f}% |")
    lines += ["", "| function (inclusive, event-loop scaffolding left out) | share |",
              "|---|---:|"]
    shown = 0
    for name, value in prof.inclusive.most_common():
        if value > SCAFFOLD_SHARE * prof.samples:
            continue
        lines.append(f"| `{name}` | {prof.share(value):.1f}% |")
        shown += 1
        if shown >= top + 10:
            break
    return lines
