"""A one-pass screen over every rule pattern, so Python's `re` runs only those that may match.

Python's backtracking engine scans a message once per pattern, and the rules have a few
hundred big alternations: that was most of a message's CPU. RE2 (Google's linear-time
engine) matches them all in a single pass over the text. Its answer is only a screen:
each pattern is *widened* for RE2, never narrowed (word boundaries, anchors and lookarounds
are dropped; \\w, \\d and \\s take their Unicode meaning; a negated set holding \\w or \\d
matches anything),
so a pattern the screen rules out cannot match in Python either, and the exact match, with
its `unless` context, is still Python's. Patterns RE2 cannot take are always run, and so is
every pattern on a text RE2 would read differently (see :data:`_CASE_MISMATCH`).
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
# RE2's \w and \d follow a newer Unicode than Python's `re`: more characters, which widens a
# set but would narrow a negated one.
_WIDER_IN_RE2 = {"w", "d"}
_ANYTHING = r"[\s\S]"
# Python's `re` lets "i" match these two (and "I" too) when ignoring case, RE2 does not: on
# a text that holds one the screen steps aside, and a pattern that holds one always runs.
# They are the only letters the two engines case-fold differently (the tests check).
_CASE_MISMATCH = ("\u0130", "\u0131")  # İ, ı
# {m}, {m,n}, {m,} or {,n}: a repetition in Python; RE2 does not read "{,n}" as one
_REPEAT = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


class Untranslatable(ValueError):
    pass


def widen(pattern: str) -> str:
    """The pattern for RE2, matching at least everything the Python pattern matches."""
    if any(ch in pattern for ch in _CASE_MISMATCH):
        raise Untranslatable("a letter the two engines case-fold differently")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise Untranslatable("trailing backslash")
            nxt = pattern[i + 1]
            if nxt in _DROP:
                pass
            elif nxt.isdigit() and nxt != "0":
                raise Untranslatable("back-reference")
            else:
                out.append(_OUTSIDE.get(nxt, "\\" + nxt))
            i += 2
            continue
        if ch == "[":
            end = _set_end(pattern, i)
            out.append(_widen_set(pattern[i:end]))
            i = end
            continue
        if ch == "{":
            repeat = _REPEAT.match(pattern, i)
            if repeat and repeat.group(0) != "{}":
                low, comma, high = repeat.groups()
                out.append("{" + (low or "0") + (comma or "") + (high or "") + "}")
                i = repeat.end()
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


def _widen_set(text: str) -> str:
    """A character set ("[...]", brackets included) for RE2."""
    negated = text.startswith("[^")
    out = ["[^" if negated else "["]
    i = 2 if negated else 1
    if text[i] == "]":  # a literal ] first in the set
        out.append("\\]")
        i += 1
    while i < len(text) - 1:
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in "WDS":
            raise Untranslatable("negated class inside a set")
        if negated and nxt in _WIDER_IN_RE2:
            return _ANYTHING
        out.append(_INSIDE.get(nxt, "\\" + nxt))
        i += 2
    out.append("]")
    return "".join(out)


def _set_end(pattern: str, start: int) -> int:
    """The index just past the character set that opens at ``start``."""
    i = start + 1
    if pattern[i:i + 1] == "^":
        i += 1
    if pattern[i:i + 1] == "]":
        i += 1
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] == "]":
            return i + 1
        i += 1
    raise Untranslatable("unterminated set")


def _group_end(pattern: str, start: int) -> int:
    """The index just past the group that opens at ``start``."""
    depth, i = 0, start
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _set_end(pattern, i)
            continue
        if ch == "(":
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
        if self._set is None or any(ch in text for ch in _CASE_MISMATCH):
            return frozenset(self.patterns)
        try:
            hits = self._set.Match(text) or ()
        except UnicodeEncodeError:  # a lone surrogate: RE2 reads only UTF-8
            return frozenset(self.patterns)
        return self._always.union(self._screened[i] for i in hits)
