"""Buyer messages to a seller whose orders the marketplace fulfils.

Product questions go to the seller; customer-service requests (where is my order,
returns, refunds) go to the marketplace's customer service, which can act on them.
"""

from __future__ import annotations

from policies.chain import Policy
from policies.context import BUYER_TO_SELLER, Context
from policies.verdict import Effect, Verdict, note, reject


def check(ctx: Context) -> Verdict | None:
    seller, reasons = ctx.seller, ctx.settings.contact_reasons
    if seller is None or seller.fulfilment != "marketplace" or reasons is None:
        return None
    if not reasons.is_customer_service(f"{ctx.subject}\n{ctx.text}"):
        return None
    if not ctx.settings.customer_service:
        return reject("the marketplace handles delivery, returns and refunds for this order: "
                      "contact its customer service from the order page")
    return note("customer-service request: routed to the marketplace",
                effects=(Effect("route_customer_service"),))


POLICY = Policy("fulfilment", ("data",), check, (BUYER_TO_SELLER,))
