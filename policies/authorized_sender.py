"""Seller mail must come from an address enabled in the seller's Messaging Permissions.

At RCPT the envelope sender is checked; at DATA the From header too, so a permitted
envelope cannot carry someone else's From.
"""

from __future__ import annotations

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject

HINT = "add it under Messaging Permissions or send from an enabled address"


def check(ctx: Context) -> Verdict | None:
    allowed = ctx.seller_senders
    if ctx.envelope.mail_from not in allowed:
        return reject(f"sender address is not authorized for this seller: {HINT}")
    if ctx.stage == "data":
        if len(ctx.from_addresses) != 1:
            return reject("the message needs exactly one From address")
        if ctx.from_addresses[0] not in allowed:
            return reject(f"From address is not authorized for this seller: {HINT}")
    return None


POLICY = Policy("authorized_sender", ("rcpt", "data"), check, (SELLER_TO_BUYER,))
