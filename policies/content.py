"""The "content" policy: marketing, cancellation requests, feedback manipulation and
off-platform contact in seller -> buyer messages.

The rules are data (``conf/content_rules.toml``): each has an id, a category, regex
patterns (words in context), a weight and optional ``unless`` patterns that neutralize a
match nearby. A category is refused when the weights of its rules that fired reach the
category's threshold. Off-platform contact is also found by code: e-mail addresses,
spelled-out addresses, phone numbers (``phonenumbers``), links outside the allow-list and
a Reply-To that is not one of the seller's addresses; each detector has a rule id and a
weight from the same file.

Everything here is pure except :func:`load_rules`, which reads the file at start-up.
"""

from __future__ import annotations

import bisect
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers

from policies.context import Context
from policies.text import order_ids
from policies.verdict import Effect, Verdict, note, reject, tempfail

CATEGORIES = ("marketing", "cancellation_request", "feedback_manipulation",
              "off_platform_contact")
TOPICS = ("customization", "delivery_scheduling", "shipping_address")
OFF_PLATFORM = "off_platform_contact"
DETECTORS = (
    "off_platform.email_address",
    "off_platform.spelled_email",
    "off_platform.webmail",
    "off_platform.phone_number",
    "off_platform.link",
    "off_platform.reply_to",
)
_FLAGS = re.IGNORECASE | re.UNICODE


# --------------------------------------------------------------------------------------
# compiled rules
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    id: str
    group: str  # a category for content rules, a topic for critical rules
    weight: float
    patterns: tuple[re.Pattern[str], ...]
    unless: tuple[re.Pattern[str], ...] = ()
    window: int = 120

    def first_match(self, text: str) -> str | None:
        """The first match not neutralized by an ``unless`` pattern nearby, or None."""
        for pattern in self.patterns:
            for match in pattern.finditer(text):
                if self.unless:
                    lo = max(0, match.start() - self.window)
                    around = text[lo:match.end() + self.window]
                    if any(u.search(around) for u in self.unless):
                        continue
                return match.group(0)
        return None


@dataclass(frozen=True)
class Category:
    name: str
    threshold: float
    reason: str


@dataclass(frozen=True)
class OffPlatformSettings:
    allowed_domains: frozenset[str]
    link_tlds: tuple[str, ...]
    webmail_providers: tuple[str, ...]
    phone_regions: tuple[str, ...]
    phone_min_digits: int
    phone_cue: re.Pattern[str]
    phone_context_chars: int
    phone_ok_context: tuple[re.Pattern[str], ...]
    phone_identifier_context: tuple[re.Pattern[str], ...]
    phone_personal_context: re.Pattern[str]
    detector_weights: tuple[tuple[str, float], ...]

    def weight(self, detector: str) -> float:
        return dict(self.detector_weights).get(detector, 0.0)


@dataclass(frozen=True, eq=False)
class ContentRules:
    """Compiled content and critical-topic rules; build with :meth:`from_dict`."""

    categories: tuple[Category, ...]
    rules: tuple[Rule, ...]
    off_platform: OffPlatformSettings
    review_patterns: tuple[re.Pattern[str], ...]
    review_note_id: str
    review_repeat_id: str
    review_repeat_reason: str
    critical_rules: tuple[Rule, ...]
    critical_threshold: float
    max_text_chars: int = 100_000
    # compiled from off_platform settings once, used for every message
    _bare_domain: re.Pattern[str] = field(repr=False, default=re.compile("(?!)"))
    _spelled_email: re.Pattern[str] = field(repr=False, default=re.compile("(?!)"))
    _webmail: re.Pattern[str] = field(repr=False, default=re.compile("(?!)"))

    def category(self, name: str) -> Category:
        for cat in self.categories:
            if cat.name == name:
                return cat
        raise KeyError(name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContentRules:
        """Validate and compile rules; a ValueError names the bad rule or key."""
        return _build(data)


def load_rules(path: str | Path) -> ContentRules:
    """Read and compile the rules file (the only I/O here, done at start-up)."""
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    try:
        return ContentRules.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def _check_keys(where: str, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: [{key}] must be a table")
    return value


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where} must be > 0, got {value!r}")
    return float(value)


def _compile_list(value: Any, where: str, *, required: bool) -> tuple[re.Pattern[str], ...]:
    if value is None:
        value = []
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError(f"{where} must be a list of regexes")
    if required and not value:
        raise ValueError(f"{where} must not be empty")
    return tuple(_compile(p, where) for p in value)


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: pattern must be a non-empty string, got {pattern!r}")
    try:
        return re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"{where}: bad regex {pattern!r}: {exc}") from exc


def _rule(raw: Any, index: int, groups: Iterable[str], group_key: str,
          seen: set[str], window: int, section: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{section}[{index}] must be a table")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not re.fullmatch(r"[a-z0-9_]+(?:\.[a-z0-9_]+)+", rule_id):
        raise ValueError(f"{section}[{index}]: id must look like 'category.name', got {rule_id!r}")
    where = f"rule {rule_id}"
    if rule_id in seen:
        raise ValueError(f"{where}: duplicate id")
    seen.add(rule_id)
    _check_keys(where, raw, ("id", group_key, "patterns", "weight", "unless", "window"))
    group = raw.get(group_key)
    if group not in groups:
        raise ValueError(f"{where}: {group_key} must be one of {', '.join(groups)}, got {group!r}")
    if "weight" not in raw:
        raise ValueError(f"{where}: weight is missing")
    weight = _number(raw["weight"], f"{where}: weight", positive=True)
    win = raw.get("window", window)
    if isinstance(win, bool) or not isinstance(win, int) or win < 0:
        raise ValueError(f"{where}: window must be a non-negative integer")
    return Rule(
        id=rule_id,
        group=group,
        weight=weight,
        patterns=_compile_list(raw.get("patterns"), f"{where}: patterns", required=True),
        unless=_compile_list(raw.get("unless"), f"{where}: unless", required=False),
        window=win,
    )


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _build(data: Mapping[str, Any]) -> ContentRules:
    if not isinstance(data, Mapping):
        raise ValueError("content rules must be a table")
    _check_keys("content rules", data,
                ("settings", "categories", "rules", "review_request", "off_platform", "critical"))
    settings = _table(data, "settings", "content rules")
    _check_keys("[settings]", settings, ("unless_window", "max_text_chars"))
    window = settings.get("unless_window", 120)
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError("[settings] unless_window must be a non-negative integer")
    max_chars = settings.get("max_text_chars", 100_000)
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1000:
        raise ValueError("[settings] max_text_chars must be an integer >= 1000")

    raw_cats = _table(data, "categories", "content rules")
    missing = [c for c in CATEGORIES if c not in raw_cats]
    if missing:
        raise ValueError(f"[categories]: missing {', '.join(missing)}")
    categories = []
    for name, raw in raw_cats.items():
        where = f"[categories.{name}]"
        if name not in CATEGORIES:
            raise ValueError(f"{where}: unknown category (known: {', '.join(CATEGORIES)})")
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where} must be a table")
        _check_keys(where, raw, ("threshold", "reason"))
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"{where}: reason is missing")
        threshold = _number(raw.get("threshold"), f"{where} threshold", positive=True)
        categories.append(Category(name, threshold, reason))

    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ValueError("[[rules]] must be an array of tables")
    seen: set[str] = set(DETECTORS)
    rules = tuple(_rule(raw, i, CATEGORIES, "category", seen, window, "[[rules]]")
                  for i, raw in enumerate(raw_rules))

    review = _table(data, "review_request", "content rules")
    _check_keys("[review_request]", review, ("note_id", "repeat_id", "repeat_reason", "patterns"))
    note_id = review.get("note_id", "feedback.review_request")
    repeat_id = review.get("repeat_id", "feedback.repeat_request")
    repeat_reason = review.get(
        "repeat_reason",
        "message refused: a review request was already sent for order {order}; "
        "only one review request per order is allowed",
    )
    for key, value in (("note_id", note_id), ("repeat_id", repeat_id),
                       ("repeat_reason", repeat_reason)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"[review_request] {key} must be a non-empty string")
    for rid in (note_id, repeat_id):
        if rid in seen:
            raise ValueError(f"[review_request]: id {rid} is already used by a rule")
    review_patterns = _compile_list(review.get("patterns"), "[review_request] patterns",
                                    required=False)

    off = _build_off_platform(_table(data, "off_platform", "content rules"))

    critical = _table(data, "critical", "content rules")
    _check_keys("[critical]", critical, ("threshold", "rules"))
    critical_threshold = _number(critical.get("threshold", 1.0), "[critical] threshold",
                                 positive=True)
    raw_critical = critical.get("rules", [])
    if not isinstance(raw_critical, list):
        raise ValueError("[[critical.rules]] must be an array of tables")
    critical_rules = tuple(_rule(raw, i, TOPICS, "topic", seen, window, "[[critical.rules]]")
                           for i, raw in enumerate(raw_critical))

    tlds = "|".join(re.escape(t) for t in sorted(off.link_tlds, key=len, reverse=True))
    webmail = "|".join(re.escape(w) for w in off.webmail_providers)
    return ContentRules(
        categories=tuple(categories),
        rules=rules,
        off_platform=off,
        review_patterns=review_patterns,
        review_note_id=note_id,
        review_repeat_id=repeat_id,
        review_repeat_reason=repeat_reason,
        critical_rules=critical_rules,
        critical_threshold=critical_threshold,
        max_text_chars=max_chars,
        _bare_domain=_bare_domain_pattern(tlds),
        _spelled_email=_spelled_email_pattern(tlds),
        _webmail=re.compile(rf"(?<![\w.-])(?:{webmail})(?![\w-])", _FLAGS) if webmail
        else re.compile("(?!)"),
    )


def _build_off_platform(raw: Mapping[str, Any]) -> OffPlatformSettings:
    where = "[off_platform]"
    _check_keys(where, raw, (
        "allowed_domains", "link_tlds", "webmail_providers", "phone_regions",
        "phone_min_digits", "phone_cue", "phone_context_chars", "phone_ok_context",
        "phone_identifier_context", "phone_personal_context", "detectors",
    ))
    detectors = raw.get("detectors", {})
    if not isinstance(detectors, Mapping):
        raise ValueError(f"{where}.detectors must be a table")
    unknown = sorted(set(detectors) - set(DETECTORS))
    if unknown:
        raise ValueError(f"{where}.detectors: unknown detector(s) {', '.join(unknown)} "
                         f"(known: {', '.join(DETECTORS)})")
    weights = tuple((d, _number(w, f"{where}.detectors {d}")) for d, w in detectors.items())
    regions = _str_list(raw.get("phone_regions", ["GB", "US"]), f"{where} phone_regions")
    for region in regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{where} phone_regions: unknown region {region!r}")
    min_digits = raw.get("phone_min_digits", 9)
    if isinstance(min_digits, bool) or not isinstance(min_digits, int) or min_digits < 5:
        raise ValueError(f"{where} phone_min_digits must be an integer >= 5")
    chars = raw.get("phone_context_chars", 120)
    if isinstance(chars, bool) or not isinstance(chars, int) or chars < 0:
        raise ValueError(f"{where} phone_context_chars must be a non-negative integer")
    return OffPlatformSettings(
        allowed_domains=frozenset(d.lower().strip(".") for d in _str_list(
            raw.get("allowed_domains", []), f"{where} allowed_domains")),
        link_tlds=tuple(t.lower().strip(".") for t in _str_list(
            raw.get("link_tlds", ["com", "net", "org"]), f"{where} link_tlds")),
        webmail_providers=tuple(w.lower() for w in _str_list(
            raw.get("webmail_providers", []), f"{where} webmail_providers")),
        phone_regions=regions,
        phone_min_digits=min_digits,
        phone_cue=_compile(raw.get("phone_cue", r"\b(?:call|phone|tel|mobile)\b\W{0,5}$"),
                           f"{where} phone_cue"),
        phone_context_chars=chars,
        phone_ok_context=_compile_list(raw.get("phone_ok_context"), f"{where} phone_ok_context",
                                       required=False),
        phone_identifier_context=_compile_list(raw.get("phone_identifier_context"),
                                               f"{where} phone_identifier_context",
                                               required=False),
        phone_personal_context=_compile(
            raw.get("phone_personal_context", r"\b(?:call|text)\s+(?:me|us)\b"),
            f"{where} phone_personal_context"),
        detector_weights=weights,
    )


# --------------------------------------------------------------------------------------
# text preparation
# --------------------------------------------------------------------------------------

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
        if _ORIGINAL.match(line):
            break
        if _OUTLOOK_HEADER.match(line) and any(_OUTLOOK_NEXT.match(nxt)
                                               for nxt in lines[i + 1:i + 4]):
            break
        if line.lstrip().startswith(">") or _ATTRIBUTION.match(line):
            continue
        kept.append(line)
    return "\n".join(kept)


def _flatten(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


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


# --------------------------------------------------------------------------------------
# off-platform detectors
# --------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@((?:[\w-]+\.)+[a-z]{2,})(?![\w-])", _FLAGS)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", _FLAGS)


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


def _phone_numbers(text: str, off: OffPlatformSettings,
                   protected: list[tuple[int, int]]) -> list[str]:
    """Phone numbers not in a carrier's/manufacturer's context."""
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
                         senders: frozenset[str], alias_domain: str) -> dict[str, str]:
    off = rules.off_platform
    allowed = set(off.allowed_domains)
    if alias_domain:
        allowed.add(alias_domain.lower().strip("."))
    allowed_f = frozenset(allowed)
    fired: dict[str, str] = {}
    protected: list[tuple[int, int]] = [m.span() for m in
                                        re.finditer(r"\d{3}-\d{7}-\d{7}", text)]

    for m in _EMAIL.finditer(text):
        protected.append(m.span())
        if not _host_allowed(m.group(1), allowed_f):
            fired.setdefault("off_platform.email_address", m.group(0))

    for m in _URL.finditer(text):
        protected.append(m.span())
        url = m.group(0).rstrip(".,;:!?")
        if not _host_allowed(_host_of(url), allowed_f):
            fired.setdefault("off_platform.link", url)
    for m in rules._bare_domain.finditer(text):
        if any(s <= m.start() < e for s, e in protected):
            continue
        protected.append(m.span())
        if not _host_allowed(m.group(1), allowed_f):
            fired.setdefault("off_platform.link", m.group(0))

    for m in rules._spelled_email.finditer(text):
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

    for m in rules._webmail.finditer(text):
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


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentResult:
    category: str | None  # the refused category, None when the message may pass
    scores: dict[str, float]
    rule_ids: tuple[str, ...]  # every rule that fired, any category
    review_request: bool = False  # the message asks for a review
    matches: dict[str, str] = field(default_factory=dict)  # rule id -> text it matched

    @property
    def refused(self) -> bool:
        return self.category is not None


def evaluate(rules: ContentRules, subject: str, text: str, *,
             reply_to: tuple[str, ...] = (), senders: frozenset[str] = frozenset(),
             alias_domain: str = "", is_reply: bool = True) -> ContentResult:
    """Score a message's subject and visible text against the rules.

    ``is_reply``: the message answers one from the buyer, so quoted lines are the
    buyer's words and do not count (see :func:`prepare`).
    """
    prepared = prepare(subject, text, rules.max_text_chars, is_reply=is_reply)
    matches: dict[str, str] = {}
    scores = {c.name: 0.0 for c in rules.categories}
    for rule in rules.rules:
        hit = rule.first_match(prepared)
        if hit is not None:
            matches[rule.id] = hit
            scores[rule.group] += rule.weight
    for detector, hit in _detect_off_platform(rules, prepared, tuple(reply_to),
                                              frozenset(senders), alias_domain).items():
        matches[detector] = hit
        scores[OFF_PLATFORM] += rules.off_platform.weight(detector)

    review = None
    for pattern in rules.review_patterns:
        found = pattern.search(prepared)
        if found:
            review = found.group(0)
            break
    rule_ids = tuple(matches)
    if review is not None:
        matches[rules.review_note_id] = review
        rule_ids += (rules.review_note_id,)

    # The category furthest past its threshold; ties go to the first listed.
    best: str | None = None
    best_ratio = 0.0
    for cat in rules.categories:
        ratio = scores[cat.name] / cat.threshold
        if ratio >= 1.0 and ratio > best_ratio:
            best, best_ratio = cat.name, ratio
    return ContentResult(best, {k: round(v, 3) for k, v in scores.items()}, rule_ids,
                         review is not None, matches)


def _message_orders(ctx: Context) -> list[str]:
    ids = order_ids(ctx.subject, strip_quoted(ctx.text) if ctx.is_reply else ctx.text)
    if not ids and len(ctx.orders) == 1:
        ids = [ctx.orders[0].id]  # a reply in a single-order conversation
    return ids


def check(ctx: Context) -> Verdict | None:
    """The "content" policy."""
    rules = ctx.settings.content_rules
    if rules is None:
        # misconfiguration: never let mail through unfiltered, let the sender retry
        return tempfail("content rules are not loaded; try again later")
    if ctx.message is None:
        return None
    result = evaluate(rules, ctx.subject, ctx.text, reply_to=tuple(ctx.reply_to_addresses),
                      senders=frozenset(ctx.seller_senders),
                      alias_domain=ctx.settings.alias_domain, is_reply=ctx.is_reply)
    if result.category is not None:
        fired = tuple(r for r in result.rule_ids if r != rules.review_note_id)
        return reject(rules.category(result.category).reason, rule_ids=fired)
    if result.review_request:
        ids = _message_orders(ctx)
        repeated = [oid for oid in ids if oid in ctx.review_requests]
        if repeated:
            return reject(rules.review_repeat_reason.format(order=repeated[0]),
                          rule_ids=result.rule_ids + (rules.review_repeat_id,))
        effects = tuple(Effect("review_request", reason="neutral review request", order_id=oid)
                        for oid in ids)
        which = ", ".join(ids) if ids else "no order named"
        return note(f"neutral review request ({which})", rule_ids=result.rule_ids,
                    effects=effects)
    if result.rule_ids:
        below = ", ".join(f"{c} {s:g}/{rules.category(c).threshold:g}"
                          for c, s in result.scores.items() if s > 0)
        return note(f"content rules fired below threshold ({below})", rule_ids=result.rule_ids)
    return None
