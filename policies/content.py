"""The "content" policy: marketing, cancellation requests, feedback manipulation and
off-platform contact in seller -> buyer messages.

The rules are data (``conf/content_rules.toml``): each has an id, a category, regex
patterns (words in context), a weight and optional ``unless`` patterns that neutralize a
match nearby. A category is refused when the weights of its rules that fired reach the
category's threshold. Off-platform contact is also found by code: e-mail addresses,
spelled-out addresses, phone numbers (``phonenumbers``), links outside the allow-list and
a Reply-To that is not one of the seller's addresses; each detector has a rule id and a
weight from the same file.

This module scores a message (:func:`evaluate`) and turns the score into a verdict
(:func:`check`). The pieces it uses live next to it: the rules and their loading in
:mod:`policies.content_rules`, quoted-reply handling in :mod:`policies.content_quoting`
and the off-platform detectors in :mod:`policies.content_off_platform`; their public names
are re-exported here. Everything is pure except :func:`load_rules`, which reads the file
at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from policies.content_off_platform import _detect_off_platform
from policies.content_quoting import normalize, prepare, strip_quoted
from policies.content_rules import (
    CATEGORIES,
    DETECTORS,
    OFF_PLATFORM,
    TOPICS,
    ContentRules,
    load_rules,
)
from policies.content_screen import pattern_ids
from policies.context import Context
from policies.text import order_ids
from policies.verdict import Effect, Verdict, note, reject, tempfail

__all__ = [
    "CATEGORIES",
    "DETECTORS",
    "TOPICS",
    "ContentResult",
    "ContentRules",
    "check",
    "evaluate",
    "load_rules",
    "normalize",
    "prepare",
    "strip_quoted",
]


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
    maybe = rules.candidates(prepared)
    matches: dict[str, str] = {}
    scores = {c.name: 0.0 for c in rules.categories}
    # Most messages give no rule a candidate pattern: one test for all, not one per rule.
    if maybe is None or maybe.any_of(_rule_patterns(rules)):
        for rule in rules.rules:
            hit = rule.first_match(prepared, maybe)
            if hit is not None:
                matches[rule.id] = hit
                scores[rule.group] += rule.weight
    for detector, hit in _detect_off_platform(rules, prepared, tuple(reply_to),
                                              frozenset(senders), alias_domain, maybe).items():
        matches[detector] = hit
        scores[OFF_PLATFORM] += rules.off_platform.weight(detector)

    review = None
    for pattern in rules.review_patterns:
        if maybe is not None and pattern not in maybe:
            continue
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


@lru_cache(maxsize=8)
def _rule_patterns(rules: ContentRules) -> frozenset[int]:
    """Every pattern of the rules, as :meth:`Candidates.any_of` takes them: a rule can
    only match when the screen left one of its patterns."""
    return pattern_ids(p for rule in rules.rules for p in rule.patterns)


def _message_orders(ctx: Context) -> list[str]:
    ids = order_ids(ctx.subject, strip_quoted(ctx.text) if ctx.is_reply else ctx.text)
    if not ids and len(ctx.orders) == 1:
        ids = [ctx.orders[0].id]  # a reply in a single-order conversation
    return ids


def _as_delivered(ctx: Context, text: str) -> str:
    """The text as the buyer will read it: the parties' own addresses are aliases by then,
    so a seller signing with their own address is not sending the buyer off-platform."""
    if "@" not in text:
        return text  # most texts: no address to replace
    parties = {*ctx.seller_senders, ctx.envelope.mail_from, *ctx.from_addresses}
    if ctx.seller is not None and ctx.seller.inbox:
        parties.add(ctx.seller.inbox)
    if ctx.buyer is not None:
        parties.add(ctx.buyer.address)
    parties.discard("")
    if not parties:
        return text
    return _parties_pattern(frozenset(parties)).sub(f"alias@{ctx.settings.alias_domain}", text)


@lru_cache(maxsize=256)
def _parties_pattern(parties: frozenset[str]) -> re.Pattern[str]:
    # a conversation's parties are the same message after message: compiled once for all
    pattern = "|".join(re.escape(p) for p in sorted(parties, key=len, reverse=True))
    return re.compile(pattern, re.IGNORECASE)


def check(ctx: Context) -> Verdict | None:
    """The "content" policy."""
    rules = ctx.settings.content_rules
    if rules is None:
        # misconfiguration: never let mail through unfiltered, let the sender retry
        return tempfail("content rules are not loaded; try again later")
    if ctx.message is None:
        return None
    subject, text = (_as_delivered(ctx, t) for t in (ctx.subject, ctx.text))
    result = evaluate(rules, subject, text, reply_to=tuple(ctx.reply_to_addresses),
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
