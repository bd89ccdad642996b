"""A one-pass screen over every rule pattern, so Python's `re` runs only those that may match.

Python's backtracking engine scans a message once per pattern, and the rules have a few
hundred big alternations: that was most of a message's CPU. RE2 (Google's linear-time
engine) matches them all in a single pass over the text. Its answer is only a screen:
each pattern is *widened* for RE2, never narrowed (word boundaries, anchors and lookarounds
are dropped; \\w, \\d and \\s take their Unicode meaning; negated classes match anything),
so a pattern the screen rules out cannot match in Python either, and the exact match, with
its `unless` context, is still Python's. Patterns RE2 cannot take are always run.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

# RE2 reports patterns it rejects through absl logging on stderr; that is expected here.
os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")

try:
    import re2
except ImportError:  # the screen is an optimization: without RE2 every pattern runs
    re2 = None

_WORD = r"\p{L}\p{N}_"
_SPACE = r"\s\p{Z}\x{85}\x{0b}\x{1c}-\x{1f}"
_INSIDE = {"w": _WORD, "d": r"\p{Nd}", "s": _SPACE}
_OUTSIDE = {"w": f"[{_WORD}]", "d": r"\p{Nd}", "s": f"[{_SPACE}]",
            "W": r"[\s\S]", "D": r"[\s\S]", "S": r"[\s\S]"}
_DROP = {"b", "B", "A", "Z"}  # assertions: dropping them only widens


class Untranslatable(ValueError):
    pass


def widen(pattern: str) -> str:
    """The pattern for RE2, matching at least everything the Python pattern matches."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise Untranslatable("trailing backslash")
            nxt = pattern[i + 1]
            if in_class:
                if nxt in "WDS":
                    raise Untranslatable("negated class inside a set")
                out.append(_INSIDE.get(nxt, "\\" + nxt))
            elif nxt in _DROP:
                pass
            elif nxt.isdigit() and nxt != "0":
                raise Untranslatable("back-reference")
            else:
                out.append(_OUTSIDE.get(nxt, "\\" + nxt))
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a literal ] first in the set
                out.append("\\]")
                i += 1
            continue
        if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(pattern, i)
            continue
        if ch in "^$":
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _group_end(pattern: str, start: int) -> int:
    """The index just past the group that opens at ``start``."""
    depth, i, in_class = 0, start, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "^":
                i += 1
            if pattern[i + 1:i + 2] == "]":
                i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise Untranslatable("unbalanced group")


class Screen:
    """Which of the given patterns may match a text, in one RE2 pass."""

    def __init__(self, patterns: Iterable[re.Pattern[str]]) -> None:
        self.patterns = tuple(dict.fromkeys(patterns))
        self._set = None
        self._always: frozenset[re.Pattern[str]] = frozenset(self.patterns)
        if re2 is None or not self.patterns:
            return
        screened, always = [], []
        options = re2.Options()
        options.max_mem = 256 << 20  # a few hundred alternations need more than the 8 MiB default
        candidate = re2.Set.SearchSet(options)
        for pattern in self.patterns:
            flags = "(?i)" if pattern.flags & re.IGNORECASE else ""
            flags += "(?s)" if pattern.flags & re.DOTALL else ""
            try:
                candidate.Add(flags + widen(pattern.pattern))
            except Exception:  # Untranslatable, or whatever RE2 refuses: run it always
                always.append(pattern)
                continue
            screened.append(pattern)
        try:
            compiled = bool(screened) and candidate.Compile() is not False
        except Exception:  # re2.error: too big; then every pattern simply runs
            compiled = False
        if not compiled:
            logging.getLogger(__name__).warning("RE2 screen unavailable: running every rule")
            return
        self._set = candidate
        self._screened = tuple(screened)
        self._always = frozenset(always)

    def candidates(self, text: str) -> frozenset[re.Pattern[str]]:
        """The patterns that may match ``text``: the others certainly do not."""
        if self._set is None:
            return self._always
        hits = self._set.Match(text) or ()
        return self._always.union(self._screened[i] for i in hits)
