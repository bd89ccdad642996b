"""Auto-replies (vacation, out-of-office) pass once per conversation per day at most."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import MESSAGE_FLOWS, Context
from policies.verdict import Verdict, reject


def check(ctx: Context) -> Verdict | None:
    if ctx.auto_reply and ctx.recent_auto_replies:
        return reject("an automatic reply was already forwarded in this conversation today")
    return None


POLICY = Policy("auto_reply", ("data",), check, MESSAGE_FLOWS)
