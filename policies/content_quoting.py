"""What the content rules read: the sender's own words, normalized and on one line.

Its one job is quoted-reply handling and text normalization: :func:`normalize` folds
Unicode forms and typographic quotes, :func:`strip_quoted` drops quoted lines, reply
attributions and a quoted original message (the buyer's words), and :func:`prepare` joins
subject and body into the single bounded line every rule and detector scans.
"""

from __future__ import annotations

import re
import unicodedata

_QUOTE_CHARS = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ", "\u200b": "",
})
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|sv|antw)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
_ATTRIBUTION = re.compile(
    r"^\s*(?:on|am|le|el)\b.{0,250}\b(?:wrote|schrieb|a écrit|escribió)\s*:\s*$", re.IGNORECASE)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|"
                       r"message d'origine|mensaje original)\s*-{2,}\s*$", re.IGNORECASE)
_OUTLOOK_HEADER = re.compile(r"^\s*from:\s.+$", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*(?:sent|date|to):\s", re.IGNORECASE)


def normalize(text: str) -> str:
    """Unicode-normalized text with straight quotes, for matching."""
    return unicodedata.normalize("NFKC", text).translate(_QUOTE_CHARS)


def strip_quoted(text: str) -> str:
    """The sender's own words: quoted lines ("> ..."), reply attributions and a quoted
    original message below the reply are removed, since they are the buyer's words."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        # Each pattern needs a "--" or a ":" in the line: most lines skip the regexes.
        if "--" in line and _ORIGINAL.match(line):
            break
        colon = ":" in line
        if colon and _OUTLOOK_HEADER.match(line) and any(_OUTLOOK_NEXT.match(nxt)
                                                         for nxt in lines[i + 1:i + 4]):
            break
        if line.lstrip().startswith(">") or (colon and _ATTRIBUTION.match(line)):
            continue
        kept.append(line)
    return "\n".join(kept)


def _flatten(text: str) -> str:
    # the same as re.sub(r"\s+", " ", text).strip(): str.split() and `re` agree on what a
    # space is (tests/test_content_fast_paths.py checks every character), and 3x cheaper
    return " ".join(text.split())


def prepare(subject: str, text: str, max_chars: int | None = None, *,
            is_reply: bool = True) -> str:
    """What the rules read, normalized and on one line, at most ``max_chars`` characters
    (a bound on the work per message; real messages are far shorter).

    On a reply the quoted text and a "Re:" subject are the buyer's words and are left
    out; on a message that answers nothing, "> " lines are the seller's own and count.
    """
    subject = normalize(subject)
    body = normalize(text)
    if is_reply:
        body = strip_quoted(body)
        if _REPLY_SUBJECT.match(subject):
            subject = ""
    subject = subject.strip()
    if subject and subject[-1] not in ".!?":
        subject += "."  # a sentence boundary, so no pattern runs from subject into body
    flat = _flatten(f"{subject}\n{body}")
    return flat if max_chars is None else flat[:max_chars]
