"""Checks of command-line and CSV values, free of click so the import can collect problems.

Every check raises ``BadInput`` with a message that fits on one line, or returns the clean
value. Nothing here touches the store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aliasdb.models import Order
from aliasdb.store import ORDER_STATUSES

ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_CATEGORY = 200
ISO_HINT = "expected ISO 8601, e.g. 2024-05-01 or 2024-05-01T14:30:00+02:00"


class BadInput(ValueError):
    """A value the relay refuses; the message is one line and says why."""


def check_id(value: str, what: str) -> str:
    """Seller, buyer and order ids: 1-64 characters of A-Z a-z 0-9 . _ -"""
    if not ID_RE.fullmatch(value):
        raise BadInput(f"invalid {what} {value!r}: use 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def parse_when(value: str, what: str = "date") -> datetime:
    """ISO 8601 in UTC: a date alone is midnight UTC, a time without offset is UTC."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"invalid {what} {value!r}: {ISO_HINT}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def check_status(value: str | None) -> str | None:
    """An order status, or None when not given (the caller picks the default)."""
    if value is None or not value.strip():
        return None
    status = value.strip().lower()
    if status not in ORDER_STATUSES:
        raise BadInput(f"invalid status {value!r}: use one of {', '.join(ORDER_STATUSES)}")
    return status


def check_category(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    category = value.strip()
    if len(category) > MAX_CATEGORY:
        raise BadInput(f"category is longer than {MAX_CATEGORY} characters")
    if CONTROL_RE.search(category):
        raise BadInput("category contains control characters")
    return category


def order_completion(status: str | None, completed_at: datetime | None,
                     existing: Order | None, now: datetime) -> tuple[str, datetime | None]:
    """The status and completion time to store for an order.

    A completion time only makes sense for a completed order: given alone it implies
    ``completed``, with any other status it is an error. A completed order without a
    time keeps the time already stored (so re-importing a file or repeating
    ``order add`` does not restart the 30-day cutoff), else it completes now.
    """
    if completed_at is not None and completed_at > now:
        raise BadInput(f"completed_at {completed_at.isoformat()} is in the future")
    if status is None:
        status = "completed" if completed_at is not None else "pending"
    if status != "completed":
        if completed_at is not None:
            raise BadInput(f"completed_at is only allowed with status completed, not {status}")
        return status, None
    if completed_at is None:
        kept = existing.completed_at if existing is not None else None
        completed_at = kept if kept is not None else now
    return status, completed_at
