"""The [Important] rule: which messages are critical enough to reach a buyer who opted out.

``[Important]`` (any letter case, anywhere in the decoded Subject) is justified only for
product customization, delivery scheduling or a shipping-address issue. The topic is
decided by the ``[critical]`` rules in ``conf/content_rules.toml`` (loaded into the same
:class:`~policies.content.ContentRules`), over subject and text. The topic is independent
of the content verdict: a prohibited message may still be about a critical topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies.content_quoting import prepare
from policies.content_rules import TOPICS, ContentRules

_TAG = re.compile(r"\[important\]", re.IGNORECASE)


def has_important_tag(subject: str) -> bool:
    """True when the (already decoded) subject carries ``[Important]`` in any case."""
    return bool(_TAG.search(subject))


@dataclass(frozen=True)
class CriticalResult:
    tagged: bool
    topic: str | None  # "customization" | "delivery_scheduling" | "shipping_address"
    rule_ids: tuple[str, ...]
    scores: tuple[tuple[str, float], ...] = ()

    @property
    def legit(self) -> bool:
        """The tag is justified: the message is about a critical topic."""
        return self.tagged and self.topic is not None


def classify(rules: ContentRules, subject: str, text: str) -> CriticalResult:
    """Whether the subject is tagged, and which critical topic (if any) the message is on."""
    tagged = has_important_tag(subject)
    # The tag itself says nothing about the topic; a "Re:" subject is still the topic of
    # the conversation, so it is kept here (unlike for the content rules).
    cleaned = _TAG.sub(" ", subject)
    cleaned = re.sub(r"^\s*(?:(?:re|aw|sv|antw)\s*:\s*)+", "", cleaned, flags=re.IGNORECASE)
    prepared = prepare(cleaned, text, rules.max_text_chars)
    maybe = rules.critical_candidates(prepared)
    scores = dict.fromkeys(TOPICS, 0.0)
    fired: list[str] = []
    for rule in rules.critical_rules:
        if rule.first_match(prepared, maybe) is not None:
            fired.append(rule.id)
            scores[rule.group] += rule.weight
    topic = None
    best = 0.0
    for name in TOPICS:
        if scores[name] >= rules.critical_threshold and scores[name] > best:
            topic, best = name, scores[name]
    return CriticalResult(tagged, topic, tuple(fired),
                          tuple((k, round(v, 3)) for k, v in scores.items()))
