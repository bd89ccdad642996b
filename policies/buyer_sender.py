"""Only the pair's buyer may write to a seller alias."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import BUYER_TO_SELLER, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    if ctx.envelope.auth_seller is not None:
        return reject("a seller login cannot write to a seller alias")
    buyer = ctx.buyer.address if ctx.buyer else None
    if ctx.envelope.mail_from == "":
        # an out-of-office answer comes from the null sender: let it show its headers
        if ctx.stage == "data" and not ctx.auto_reply:
            return reject("the null sender is only accepted for automatic replies")
    elif ctx.envelope.mail_from != buyer:
        return reject("this address may only be written to from the buyer's registered "
                      "address; reply from the address you used on the marketplace")
    if ctx.stage == "data" and ctx.from_addresses != (buyer,):
        return reject("the From address must be the buyer's registered address")
    return None


POLICY = Policy("buyer_sender", ("rcpt", "data"), check, (BUYER_TO_SELLER,))
