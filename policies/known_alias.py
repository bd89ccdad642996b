"""The recipient must be a live alias."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import ALL_FLOWS, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    if ctx.control is not None:
        if not ctx.control.valid:
            return reject("invalid or expired relay address", status="5.1.1")
        return None
    if ctx.alias is None:
        return reject("no such alias: check the address you are writing to",
                      status="5.1.1")
    if ctx.alias.revoked:
        return reject("this alias has been revoked: use the current address shown in the "
                      "marketplace's order page", status="5.1.1")
    return None


POLICY = Policy("known_alias", ("rcpt",), check, ALL_FLOWS)
