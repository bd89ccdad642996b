"""A buyer address that hard-bounces repeatedly gets a clear refusal, not silent loss."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    if ctx.buyer is not None and ctx.buyer.bouncing:
        return reject("the buyer's email address is not accepting mail (repeated bounces); "
                      "contact the buyer through the marketplace's order page",
                      status="5.1.2")
    return None


POLICY = Policy("deliverable", ("rcpt",), check, (SELLER_TO_BUYER,))
