"""Off-platform contact found by code rather than by rule patterns.

Its one job is the detectors named in ``DETECTORS``: e-mail addresses, spelled-out
addresses ("jo at example dot com"), webmail provider names, phone numbers
(``phonenumbers``, minus carriers', order ids, dates and amounts), links outside the
allow-list and a Reply-To that is not one of the seller's addresses. It also builds the
link and spelled-address regexes that :mod:`policies.content_rules` compiles once per rules
file. Pure functions; the weights that turn a detection into a score live in the rules.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Container, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

import phonenumbers

from policies.content_validation import _FLAGS
from policies.text import dash_anchored

if TYPE_CHECKING:
    from policies.content_rules import ContentRules, OffPlatformSettings

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@((?:[\w-]+\.)+[a-z]{2,})(?![\w-])", _FLAGS)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", _FLAGS)
_ORDER_SPAN = re.compile(r"\d{3}-\d{7}-\d{7}")  # an order id is never a phone number


def _bare_domain_pattern(tlds: str) -> re.Pattern[str]:
    # "shopname.com", "www.shop.co.uk/path": a host ending in a known TLD, not part of an
    # e-mail address or a longer dotted token (file names, version numbers).
    return re.compile(
        rf"(?<![\w@.-])((?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.){{1,8}}(?:{tlds}))"
        rf"(?![\w-]|\.[a-z0-9])(/[^\s<>\"'()]*)?",
        _FLAGS,
    )


def _spelled_email_pattern(tlds: str) -> re.Pattern[str]:
    # "jo dot lantern at example dot net", "jo [at] example [dot] com", "jo(at)mail.com",
    # "jo @ mail . com": an address written so that filters miss it.
    # Each whitespace run has exactly one way to match (no two adjacent \s*), and the
    # quantifiers are possessive: otherwise "a dot a dot a ..." backtracks exponentially.
    def sep(words: str) -> str:
        return rf"\s*+(?:[\(\[\{{<]\s*+)?(?:{words})(?:\s*+[\)\]\}}>])?\s*+"

    dot = sep(r"dot|\.|punkt|point|punto")
    at = sep(r"at|@|arroba|chez|ät")
    word = r"[a-z0-9][a-z0-9_+-]{0,63}+"  # bounded: a long hyphenated run stays linear
    # Bounded repetitions keep the scan linear on long runs of "a dot a dot ...".
    return re.compile(
        rf"(?<![\w.@])(?P<local>{word}(?:{dot}{word}){{0,5}}){at}"
        rf"(?P<domain>{word}(?:{dot}{word}){{0,4}}{dot}(?:{tlds}))\b",
        _FLAGS,
    )


def _webmail_pattern(providers: tuple[str, ...]) -> re.Pattern[str]:
    webmail = "|".join(re.escape(w) for w in providers)
    if not webmail:
        return re.compile("(?!)")
    return re.compile(rf"(?<![\w.-])(?:{webmail})(?![\w-])", _FLAGS)


def screened_patterns(*compiled: re.Pattern[str]) -> tuple[re.Pattern[str], ...]:
    """The patterns the detectors scan a whole message with, ``compiled`` (built from the
    rules file) included: for the RE2 screen, so most messages skip most of them.

    The order-id and digit-run patterns are not screened: nearly every message names an
    order, so the screen would rule them out almost never, and counting digits multiplied
    the DFA states of the set that held them."""
    return (_EMAIL, _URL, *compiled)


def _scan(pattern: re.Pattern[str], text: str,
          maybe: Container[re.Pattern[str]] | None) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)``, or nothing when the screen has ruled the pattern out."""
    if maybe is not None and pattern not in maybe:
        return iter(())
    return pattern.finditer(text)


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower().strip(".")
    return any(host == d or host.endswith("." + d) for d in allowed)


def _host_of(url: str) -> str:
    url = re.sub(r"^[a-z]+://", "", url, flags=re.IGNORECASE)
    host = re.split(r"[/?#:]", url, maxsplit=1)[0]
    return host.rsplit("@", 1)[-1].lower().strip(".")


def _sentence_before(text: str, start: int, limit: int) -> str:
    window = text[max(0, start - limit):start]
    # stop at the previous sentence end, but not at a dot inside a number or a domain
    cut = max((m.end() for m in re.finditer(r"[.!?](?=\s)|\n", window)), default=0)
    return window[cut:]


def _sentence_around(text: str, start: int, end: int, limit: int) -> str:
    before = _sentence_before(text, start, limit)
    after = text[end:end + limit]
    stop = re.search(r"[.!?](?=\s|$)|\n", after)
    return before + text[start:end] + (after[:stop.start()] if stop else after)


_DATE_LIKE = re.compile(
    r"^\s*(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})\s*$")


@lru_cache(maxsize=8)
def _digit_run(min_digits: int) -> re.Pattern[str]:
    """Digits, at most four other characters apart: what any phone number is written as."""
    return re.compile(r"\d(?:\D{0,4}\d){" + str(max(min_digits - 1, 0)) + "}")


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


@lru_cache(maxsize=8)
def _zero_run(min_digits: int) -> re.Pattern[bytes]:
    """:func:`_digit_run` for a Latin-1 text whose every digit was made "0"."""
    return re.compile(rb"0(?:[^0]{0,4}0){" + str(max(min_digits - 1, 0)).encode() + rb"}")


def _digit_run_spans(text: str, min_digits: int) -> Iterator[tuple[int, int]]:
    """The spans of ``_digit_run(min_digits).finditer(text)``.

    On a Latin-1 text (one byte a character, and no digit but 0-9: \\d is [0-9] there)
    the digits are made "0" first, by a bytes translation that keeps every position: a
    pattern that starts with a literal lets `re` skip to the next digit with memchr,
    where a set costs a test per character, so the same scan is several times cheaper."""
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        return (m.span() for m in _digit_run(min_digits).finditer(text))
    zeros = data.translate(_DIGITS_TO_ZERO)
    return (m.span() for m in _zero_run(min_digits).finditer(zeros))


def _phone_numbers(text: str, off: OffPlatformSettings,
                   protected: list[tuple[int, int]]) -> list[str]:
    """Phone numbers not in a carrier's/manufacturer's context."""
    # The matcher is the costliest detector: run it only when some run of digits that is
    # not an order id is long enough to be a phone number. (Not screened by RE2: nearly
    # every message names an order, whose digits are such a run.)
    if all(any(s <= start and end <= e for s, e in protected)
           for start, end in _digit_run_spans(text, off.phone_min_digits)):
        return []
    # Each region's matches come in text order; a position already covered by an earlier
    # region's match is skipped (a sorted list of spans keeps this O(n log n)).
    starts: list[int] = []
    spans: list[tuple[int, int, str]] = []
    for region in off.phone_regions:
        matcher = phonenumbers.PhoneNumberMatcher(text, region,
                                                  leniency=phonenumbers.Leniency.POSSIBLE)
        for m in matcher:
            i = bisect.bisect_right(starts, m.start)
            overlaps_prev = i > 0 and spans[i - 1][1] > m.start
            overlaps_next = i < len(starts) and starts[i] < m.end
            if overlaps_prev or overlaps_next:
                continue
            starts.insert(i, m.start)
            spans.insert(i, (m.start, m.end, m.raw_string))
    numbers = []
    for start, end, raw in spans:
        if any(s < end and start < e for s, e in protected):
            continue  # part of an order id or a link
        digits = re.sub(r"\D", "", raw)
        before_char = text[start - 1:start]
        after_char = text[end:end + 1]
        if before_char.isalnum() or after_char.isalnum():
            continue  # inside a tracking code or another token
        # a digit group just before or after: a fragment of a longer number
        if re.search(r"\d[\s-]?$", text[max(0, start - 2):start]) or re.match(
                r"[\s-]?\d", text[end:end + 2]):
            continue
        if _DATE_LIKE.match(raw) or re.fullmatch(r"[\d\s]*[.,]\d{1,2}", raw.strip()):
            continue  # dates and amounts
        sentence = _sentence_before(text, start, off.phone_context_chars)
        cue = bool(off.phone_cue.search(sentence))
        international = raw.lstrip().startswith("+") or raw.lstrip().startswith("00")
        grouped = bool(re.search(r"[\s().-]", raw.strip()))
        if not cue and not international:
            if len(digits) < off.phone_min_digits:
                continue
            if not grouped and len(digits) > 11:
                continue  # a long unbroken digit run is a tracking or account number
        around = _sentence_around(text, start, end, off.phone_context_chars)
        if off.phone_personal_context.search(around):
            numbers.append(raw.strip())  # "call me on ...": the seller's, whatever else
            continue
        if any(p.search(sentence) for p in off.phone_identifier_context):
            continue  # "tracking number 1234 5678 9012": an identifier, not a phone
        if any(p.search(around) for p in off.phone_ok_context):
            continue  # a carrier's or manufacturer's number, not the seller's
        numbers.append(raw.strip())
    return numbers


def _detect_off_platform(rules: ContentRules, text: str, reply_to: tuple[str, ...],
                         senders: frozenset[str], alias_domain: str,
                         maybe: Container[re.Pattern[str]] | None = None) -> dict[str, str]:
    """What each detector found in ``text``; ``maybe``: the screen's candidates for it."""
    off = rules.off_platform
    allowed = set(off.allowed_domains)
    if alias_domain:
        allowed.add(alias_domain.lower().strip("."))
    allowed_f = frozenset(allowed)
    fired: dict[str, str] = {}
    protected = [m.span() for m in dash_anchored(_ORDER_SPAN, text)]

    for m in _scan(_EMAIL, text, maybe):
        protected.append(m.span())
        if not _host_allowed(m.group(1), allowed_f):
            fired.setdefault("off_platform.email_address", m.group(0))

    for m in _scan(_URL, text, maybe):
        protected.append(m.span())
        url = m.group(0).rstrip(".,;:!?")
        if not _host_allowed(_host_of(url), allowed_f):
            fired.setdefault("off_platform.link", url)
    for m in _scan(rules._bare_domain, text, maybe):
        if any(s <= m.start() < e for s, e in protected):
            continue
        protected.append(m.span())
        if not _host_allowed(m.group(1), allowed_f):
            fired.setdefault("off_platform.link", m.group(0))

    for m in _scan(rules._spelled_email, text, maybe):
        if any(s <= m.start() < e for s, e in protected):
            continue
        written = m.group(0)
        obfuscated = re.search(r"\bdot\b|\bpunkt\b|\bpunto\b|[\(\[\{<]\s*(?:at|dot)|\s@|@\s",
                               written, re.IGNORECASE)
        if not obfuscated and not re.search(r"\bat\b", written, re.IGNORECASE):
            continue
        domain = re.sub(r"\s*[\(\[\{<]?\s*(?:dot|punkt|point|punto)\s*[\)\]\}>]?\s*|\s*\.\s*",
                        ".", m.group("domain"), flags=re.IGNORECASE)
        # plain "at <place>. Com..." prose is only an address when it is written like one
        if not obfuscated and not rules._webmail.search(domain):
            continue
        if not _host_allowed(domain, allowed_f):
            fired.setdefault("off_platform.spelled_email", written)

    for m in _scan(rules._webmail, text, maybe):
        fired.setdefault("off_platform.webmail", m.group(0))
        break

    phones = _phone_numbers(text, off, protected)
    if phones:
        fired["off_platform.phone_number"] = phones[0]

    senders_l = {s.lower() for s in senders}
    for address in reply_to:
        addr = address.lower()
        domain = addr.rsplit("@", 1)[-1]
        if addr not in senders_l and not (alias_domain and domain == alias_domain.lower()):
            fired.setdefault("off_platform.reply_to", address)
    return {d: s for d, s in fired.items() if off.weight(d) > 0}
