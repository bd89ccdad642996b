"""A screen over every pattern a message is scanned with, so Python's `re` runs only those
that may match.

Python's backtracking engine scans a message once per pattern, and the rules and the
off-platform detectors have a few hundred big alternations: that was most of a message's
CPU. RE2 (Google's linear-time engine) matches a set of them in a single pass over the
text. Its answer is only a screen: each pattern is *widened* for RE2, never narrowed (word
boundaries, anchors and lookarounds are dropped; possessive quantifiers and atomic groups
become plain ones; "{m,n}" becomes "{m,}"; \\w, \\d and \\s take their Unicode meaning; a
negated set holding \\w or \\d matches anything), so a pattern the screen rules out cannot
match in Python either, and the exact match, with its `unless` context, is still Python's.
Patterns RE2 cannot take are always run, and so is every pattern on a text RE2 would read
differently (see :data:`_CASE_MISMATCH`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

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
# At most this many patterns per RE2 set. One set over every pattern is fastest on a text
# it has seen, but its DFA states are combinations of every pattern's partial matches: a
# new text makes new ones, at ~1 ms a message, and real messages are all new. Small sets
# reuse their states. The patterns are spread evenly over the fewest sets of at most this
# size: each set's pass has a fixed cost (its DFA's memory is cold by the time a message
# is screened), so a nearly empty last set costs almost as much as a full one.
_GROUP_SIZE = 24
# Each set's program and DFA cache: ample for 24 patterns, and bounded over many sets.
_SET_MEMORY = 8 << 20
# {m}, {m,n}, {m,} or {,n}: a repetition in Python
_REPEAT = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


class Untranslatable(ValueError):
    pass


def widen(pattern: str) -> str:
    """The pattern for RE2, matching at least everything the Python pattern matches."""
    if any(ch in pattern for ch in _CASE_MISMATCH):
        raise Untranslatable("a letter the two engines case-fold differently")
    out: list[str] = []
    i, n = 0, len(pattern)
    quantified = False  # the last thing written was a quantifier: "+" after it is possessive
    while i < n:
        ch = pattern[i]
        after_quantifier, quantified = quantified, False
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
        if ch in "*+?":
            if after_quantifier:
                if ch == "?":
                    out.append("?")  # lazy: matches the same strings
                # "+": possessive, dropped: a plain quantifier matches at least as much
            else:
                out.append(ch)
                quantified = True
            i += 1
            continue
        if ch == "{":
            repeat = _REPEAT.match(pattern, i)
            if repeat and repeat.group(0) != "{}":
                low, comma, _ = repeat.groups()
                # The upper bound goes ("{m,}"): RE2 would unroll "{0,63}" into 63 states
                # whose combinations blow up its DFA (slow, and memory the size of max_mem),
                # and RE2 does not read "{,n}" as a repetition at all.
                out.append("{" + (low or "0") + (comma or "") + "}")
                quantified = True
                i = repeat.end()
                continue
        if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(pattern, i)
            continue
        if pattern.startswith("(?>", i):
            out.append("(?:")  # atomic group: a plain one matches at least as much
            i += 3
            continue
        if pattern.startswith("(?", i):
            out.append("(?")  # a group's flags or name, not a quantifier
            i += 2
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


class Candidates:
    """The patterns a text may match, as the screen found them. Membership is by identity:
    hashing a compiled pattern walks its code, which for a few hundred patterns cost more
    than the screen saved. A pattern the screen was not built with is always a candidate."""

    __slots__ = ("_ids", "_known")

    def __init__(self, ids: AbstractSet[int] | None, known: frozenset[int]) -> None:
        self._ids = ids  # id() of every pattern that may match; None: every pattern may
        self._known = known  # id() of every pattern the screen was built with

    def __contains__(self, pattern: object) -> bool:
        key = id(pattern)
        return self._ids is None or key in self._ids or key not in self._known

    def any_of(self, ids: frozenset[int]) -> bool:
        """Whether any of the patterns ``ids`` names (see :func:`pattern_ids`) may match:
        one C-level check for a rule, rather than one call per pattern."""
        return self._ids is None or not self._ids.isdisjoint(ids) or not ids <= self._known


def pattern_ids(patterns: Iterable[re.Pattern[str]]) -> frozenset[int]:
    """The key :meth:`Candidates.any_of` takes for these patterns."""
    return frozenset(id(p) for p in patterns)


def _compile_set(group: list[tuple[re.Pattern[str], str]]
                 ) -> tuple[Any, list[re.Pattern[str]]]:
    """An RE2 set of the (pattern, widened) pairs RE2 takes, and those patterns in the
    order of the set's indices; (None, []) when RE2 takes none. What RE2 refuses always runs."""
    options = re2.Options()
    options.max_mem = _SET_MEMORY
    candidate = re2.Set.SearchSet(options)
    taken: dict[int, re.Pattern[str]] = {}
    for pattern, widened in group:
        try:
            taken[candidate.Add(widened)] = pattern
        except re2.error:
            continue
    try:
        if taken and candidate.Compile() is not False:
            return candidate, [taken[i] for i in range(len(taken))]  # Match's numbering
    except re2.error:  # too big for _SET_MEMORY
        pass
    return None, []


class Screen:
    """Which of the given patterns may match a text, in one RE2 pass per group of patterns."""

    def __init__(self, patterns: Iterable[re.Pattern[str]]) -> None:
        given = tuple(patterns)
        self.patterns = tuple(dict.fromkeys(given))
        self._given = given  # kept alive, so the ids below stay theirs
        self._all = Candidates(None, frozenset())
        self._sets: list[tuple[Any, tuple[tuple[int, ...], ...]]] = []
        self.unscreened = self.patterns  # the patterns that always run: RE2 cannot take them
        if re2 is None or not self.patterns:
            return
        # equal patterns compiled apart are different objects: each is known by its id
        ids_of: dict[re.Pattern[str], list[int]] = {}
        for pattern in given:
            ids_of.setdefault(pattern, []).append(id(pattern))
        unscreened: list[re.Pattern[str]] = []
        translated = []
        for pattern in self.patterns:
            flags = "(?i)" if pattern.flags & re.IGNORECASE else ""
            flags += "(?s)" if pattern.flags & re.DOTALL else ""
            try:
                translated.append((pattern, flags + widen(pattern.pattern)))
            except Exception:  # Untranslatable, or a pattern widen() misreads: it runs always
                unscreened.append(pattern)
        count = -(-len(translated) // _GROUP_SIZE)  # sets needed
        for k in range(count):
            group = translated[k * len(translated) // count:(k + 1) * len(translated) // count]
            compiled, taken = _compile_set(group)
            unscreened += (pattern for pattern, _ in group if pattern not in taken)
            if compiled is not None:
                self._sets.append((compiled, tuple(tuple(ids_of[p]) for p in taken)))
        if unscreened:
            logging.getLogger(__name__).warning(
                "RE2 screen: %d pattern(s) always run", len(unscreened))
        self.unscreened = tuple(unscreened)
        self._always = frozenset(i for p in unscreened for i in ids_of[p])
        self._known = frozenset(id(p) for p in given)

    def candidates(self, text: str) -> Candidates:
        """The patterns that may match ``text``: the others certainly do not."""
        if not self._sets or any(ch in text for ch in _CASE_MISMATCH):
            return self._all
        try:
            data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate: RE2 reads only UTF-8
            return self._all
        ids = set(self._always)
        for group, ids_at in self._sets:
            for place in group.Match(data) or ():
                ids.update(ids_at[place])
        return Candidates(ids, self._known)
