"""A seller receives buyer messages only when they turned them on and gave an inbox."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import BUYER_TO_SELLER, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    seller = ctx.seller
    if seller is None or not seller.buyer_messages or not seller.inbox:
        return reject("this seller does not accept messages by email; contact them "
                      "through the marketplace's order page")
    return None


POLICY = Policy("buyer_messages", ("rcpt",), check, (BUYER_TO_SELLER,))
