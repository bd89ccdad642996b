"""The content rules as data: loading, validating and compiling ``conf/content_rules.toml``.

Its one job is the rules' data model (:class:`Rule`, :class:`Category`,
:class:`OffPlatformSettings`, :class:`ContentRules`) and building it from the file: every
key is checked and every regex compiled once, so a bad rule stops the relay at start-up
with a ValueError that names it. :func:`load_rules` is the only I/O. Scoring a message
against the rules is :mod:`policies.content`'s job.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers

from policies.content_off_platform import (
    _bare_domain_pattern,
    _spelled_email_pattern,
    _webmail_pattern,
    screened_patterns,
)
from policies.content_screen import Candidates, Screen, pattern_ids
from policies.content_validation import (
    _check_keys,
    _compile,
    _compile_list,
    _number,
    _str_list,
    _table,
)

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
    _ids: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", pattern_ids(self.patterns))

    def first_match(self, text: str, maybe: Candidates | None = None) -> str | None:
        """The first match not neutralized by an ``unless`` pattern nearby, or None.

        ``maybe``, from the RE2 screen, holds the patterns that can match at all.
        """
        if maybe is not None and not maybe.any_of(self._ids):
            return None  # most rules, most messages: no pattern call at all
        for pattern in self.patterns:
            if maybe is not None and pattern not in maybe:
                continue
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
    screen: Screen | None = field(repr=False, default=None)
    # The critical rules have a screen of their own: the content policy never reads them,
    # and only a message tagged [Important] is classified, so most messages skip their sets.
    critical_screen: Screen | None = field(repr=False, default=None)

    def candidates(self, text: str) -> Candidates | None:
        """The patterns that may match ``text`` (None: no screen, try them all): those of
        the rules, the review request and the off-platform detectors."""
        return None if self.screen is None else self.screen.candidates(text)

    def critical_candidates(self, text: str) -> Candidates | None:
        """The critical rules' patterns that may match ``text`` (None: try them all)."""
        return None if self.critical_screen is None else self.critical_screen.candidates(text)

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
    bare_domain = _bare_domain_pattern(tlds)
    spelled_email = _spelled_email_pattern(tlds)
    webmail = _webmail_pattern(off.webmail_providers)
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
        _bare_domain=bare_domain,
        _spelled_email=spelled_email,
        _webmail=webmail,
        screen=Screen((*(p for rule in rules for p in rule.patterns),
                       *review_patterns,
                       *screened_patterns(bare_domain, spelled_email, webmail))),
        critical_screen=Screen(p for rule in critical_rules for p in rule.patterns),
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
