"""A proactive message must name an order of this pair; a reply to the buyer may omit it."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    if ctx.named_orders or ctx.is_reply:
        return None
    # An order id of another pair gets the same answer as none: it says nothing of whose.
    return reject("the message must name an order of this buyer (an order number such as "
                  "123-4567890-1234567 in the subject or text); add it and send again")


POLICY = Policy("order_reference", ("data",), check, (SELLER_TO_BUYER,))
