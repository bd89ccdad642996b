"""No seller message more than `cutoff_days` after the referenced order was completed."""

from __future__ import annotations

from datetime import timedelta

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    orders = ctx.referenced_orders
    if not orders:
        return None
    limit = timedelta(days=ctx.settings.cutoff_days)
    ended = [o for o in orders if o.status == "completed" and o.completed_at is not None]
    if len(ended) < len(orders):
        return None  # at least one referenced order is still open
    latest = max(ended, key=lambda o: o.completed_at)
    if ctx.now - latest.completed_at <= limit:
        return None
    return reject(
        f"order {latest.id} was completed on {latest.completed_at.date().isoformat()}; "
        f"sellers may message buyers about an order for {ctx.settings.cutoff_days} days after "
        f"completion (until {(latest.completed_at + limit).date().isoformat()}); contact the "
        "buyer through the marketplace instead")


POLICY = Policy("cutoff", ("data",), check, (SELLER_TO_BUYER,))
