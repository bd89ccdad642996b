"""Which critical topics a seller may raise, by the order's status and category.

The table is data (`conf/contact_reasons.toml`); this module only reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from aliasdb.models import Order

TOPICS = ("customization", "delivery_scheduling", "shipping_address")
TOPIC_WORDS = {
    "customization": "product customization",
    "delivery_scheduling": "delivery scheduling",
    "shipping_address": "a shipping-address issue",
}


@dataclass(frozen=True)
class Window:
    statuses: frozenset[str]
    customizable_only: bool = False
    why: str = ""


@dataclass(frozen=True)
class ContactReasons:
    windows: dict[str, Window]
    customizable: frozenset[str]
    customer_service: tuple[re.Pattern, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: dict) -> ContactReasons:
        windows = {}
        for topic, spec in data.get("topics", {}).items():
            if topic not in TOPICS:
                raise ValueError(f"contact reasons: unknown topic {topic!r}")
            windows[topic] = Window(frozenset(spec["statuses"]),
                                    bool(spec.get("customizable_only", False)),
                                    str(spec.get("why", "")))
        customizable = frozenset(c.lower() for c in data.get("customizable_categories", []))
        patterns = data.get("customer_service", {}).get("patterns", [])
        try:
            service = tuple(re.compile(p, re.IGNORECASE) for p in patterns)
        except re.error as exc:
            raise ValueError(f"contact reasons: bad customer_service pattern: {exc}") from None
        return cls(windows, customizable, service)

    def is_customer_service(self, text: str) -> bool:
        """A request only the fulfiller can settle: delivery, returns, refunds."""
        return any(p.search(text) for p in self.customer_service)

    def why_not(self, topic: str, orders: Iterable[Order]) -> str | None:
        """None when some order allows the topic, else the reason it is out of its window."""
        window = self.windows.get(topic)
        orders = list(orders)
        if window is None or not orders:
            return None
        for order in orders:
            category = (order.category or "").lower()
            # an order with no category is not held to the customizable list
            if window.customizable_only and category and category not in self.customizable:
                continue
            if order.status in window.statuses:
                return None
        return window.why or f"{TOPIC_WORDS[topic]} is not a reason to contact the buyer now"
