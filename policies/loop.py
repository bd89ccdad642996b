"""Mail loops: a message that already passed this relay, or has travelled too far."""

from __future__ import annotations

from policies.chain import Policy
from policies.context import MESSAGE_FLOWS, Context
from policies.verdict import Verdict, reject

LOOP_HEADER = "X-Relay-Loop"


def check(ctx: Context) -> Verdict | None:
    msg = ctx.message
    if msg is None:
        return None
    marks = [str(v).strip().lower() for v in msg.get_all(LOOP_HEADER, [])]
    if ctx.settings.alias_domain in marks:
        return reject("mail loop: this message has already passed through the relay",
                      code=554, status="5.4.6")
    hops = len(msg.get_all("Received", []))
    if hops > ctx.settings.max_hops:
        return reject(f"mail loop: {hops} Received headers, more than "
                      f"{ctx.settings.max_hops}", code=554, status="5.4.6")
    return None


POLICY = Policy("loop", ("data",), check, MESSAGE_FLOWS)
