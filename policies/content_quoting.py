"""What the content rules read: the sender's own words, normalized and on one line.

Its one job is quoted-reply handling and text normalization: :func:`normalize` folds
Unicode forms and typographic quotes, :func:`strip_quoted` drops quoted lines, reply
attributions and a quoted original message (the buyer's words), and :func:`prepare` joins
subject and body into the single bounded line every rule and detector scans.
"""

from __future__ import annotations

import re
import unicodedata

from policies.text import squeeze

_QUOTES = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ", "\u200b": "",
}
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|sv|antw)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
_ATTRIBUTION = re.compile(
    r"^\s*(?:on|am|le|el)\b.{0,250}\b(?:wrote|schrieb|a écrit|escribió)\s*:\s*$", re.IGNORECASE)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|"
                       r"message d'origine|mensaje original)\s*-{2,}\s*$", re.IGNORECASE)
_OUTLOOK_HEADER = re.compile(r"^\s*from:\s.+$", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*(?:sent|date|to):\s", re.IGNORECASE)


def normalize(text: str) -> str:
    """Unicode-normalized text with straight quotes, for matching."""
    if text.isascii():
        return text  # NFKC leaves ASCII as it is, and every quote character is beyond it
    text = unicodedata.normalize("NFKC", text)
    # text.translate(str.maketrans(_QUOTES)), but str.translate reads a non-ASCII text one
    # character at a time through the dict, a KeyError for each one it does not map:
    # ~1 ms for 3 KB. A replace for each character present gives the same text, since no
    # replacement holds a character of the table.
    for char, plain in _QUOTES.items():
        if char in text:
            text = text.replace(char, plain)
    return text


def strip_quoted(text: str) -> str:
    """The sender's own words: quoted lines ("> ..."), reply attributions and a quoted
    original message below the reply are removed, since they are the buyer's words."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Only a line holding "--", ":" or ">" can be dropped or end the reply: those lines
    # are found with str.find, and the text between them is kept as it stands.
    kept: list[str] = []  # pieces of the text, each the kept lines it holds and their "\n"
    copied = 0  # where the text not yet in ``kept`` starts
    for start in _lines_holding(text, ("--", ":", ">")):
        end = _line_end(text, start)
        line = text[start:end]
        if "--" in line and _ORIGINAL.match(line):
            break
        colon = ":" in line
        if colon and _OUTLOOK_HEADER.match(line) and _outlook_next(text, end):
            break
        if line.lstrip().startswith(">") or (colon and _ATTRIBUTION.match(line)):
            kept.append(text[copied:start])
            copied = end + 1
    else:
        if copied <= len(text):  # the last line was kept: it has no "\n" after it
            kept.append(text[copied:])
            return "".join(kept)
        start = len(text) + 1  # the last line was dropped
    kept.append(text[copied:start])
    return "".join(kept)[:-1]  # every kept line is followed by its "\n": the last one goes


def _line_end(text: str, start: int) -> int:
    end = text.find("\n", start)
    return len(text) if end == -1 else end


def _lines_holding(text: str, needles: tuple[str, ...]) -> list[int]:
    """Where each line that holds one of ``needles`` starts, in order."""
    starts: set[int] = set()
    for needle in needles:
        at = text.find(needle)
        while at != -1:
            starts.add(text.rfind("\n", 0, at) + 1)
            end = text.find("\n", at)
            if end == -1:
                break
            at = text.find(needle, end)
    return sorted(starts)


def _outlook_next(text: str, end: int) -> bool:
    """Whether one of the three lines after the line ending at ``end`` continues an
    Outlook-style header block ("Sent:", "Date:", "To:")."""
    for _ in range(3):
        if end >= len(text):
            return False
        start = end + 1
        end = _line_end(text, start)
        if _OUTLOOK_NEXT.match(text[start:end]):  # a slice: pos= would not match ^
            return True
    return False


# Every character str.split() and re's \s take for a space, but " " itself.
_SPACES = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
           "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _flatten(text: str) -> str:
    # the same as re.sub(r"\s+", " ", text).strip() and " ".join(text.split())
    # (tests/test_content_fast_paths.py checks every character), 3x cheaper than split()
    return squeeze(text, _SPACES).strip(" ")


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
