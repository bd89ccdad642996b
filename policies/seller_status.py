"""A suspended seller may not message buyers until an admin reinstates them."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    if ctx.seller is not None and ctx.seller.suspended:
        since = ctx.seller.suspended_at.date().isoformat()
        return reject(f"your buyer messaging is suspended since {since}; contact the "
                      "marketplace's seller support to be reinstated")
    return None


POLICY = Policy("seller_status", ("rcpt", "data"), check, (SELLER_TO_BUYER,))
