"""Seller mail must come from an address enabled in the seller's Messaging Permissions,
and be authenticated: SMTP AUTH as that seller, or (on the MX listener, when required)
a DKIM pass aligned with the From domain.

At RCPT the envelope sender is checked; at DATA the From header too, so a permitted
envelope cannot carry someone else's From.
"""

from __future__ import annotations

from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.verdict import Verdict, reject, tempfail

HINT = "add it under Messaging Permissions or send from an enabled address"
NULL_SENDER = "the null sender is only accepted for automatic replies"


def check(ctx: Context) -> Verdict | None:
    allowed = ctx.seller_senders
    auth = ctx.envelope.auth_seller
    if auth is not None and ctx.alias is not None and auth != ctx.alias.pair.seller_id:
        return reject("you are logged in as another seller: this buyer alias belongs to a "
                      "different seller account")
    if ctx.envelope.mail_from == "":
        # an out-of-office answer comes from the null sender: let it show its headers
        if ctx.stage == "data" and not ctx.auto_reply:
            return reject(NULL_SENDER)
    elif ctx.envelope.mail_from not in allowed:
        return reject(f"sender address is not authorized for this seller: {HINT}")
    if ctx.stage == "data":
        if len(ctx.from_addresses) != 1:
            return reject("the message needs exactly one From address")
        if ctx.from_addresses[0] not in allowed:
            return reject(f"From address is not authorized for this seller: {HINT}")
        if auth is None and ctx.settings.verify_inbound == "require":
            return _require_dkim(ctx)
    return None


def _require_dkim(ctx: Context) -> Verdict | None:
    if ctx.dkim is not None and ctx.dkim.result == "temperror":
        return tempfail("the DKIM key of the From domain could not be looked up; try again "
                        "later", status="4.7.5")
    if not (ctx.dkim is not None and ctx.dkim.result == "pass" and ctx.dkim.aligned):
        return reject("the message has no valid DKIM signature of the From domain: send "
                      "it through your provider with DKIM signing, or through the relay's "
                      "submission port with your seller login")
    return None


POLICY = Policy("authorized_sender", ("rcpt", "data"), check, (SELLER_TO_BUYER,))
