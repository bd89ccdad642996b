"""Relay only to our own aliases: anything else is a relay attempt."""

from __future__ import annotations

import re

from policies.chain import Policy
from policies.context import ALL_FLOWS, Context
from policies.verdict import Verdict, reject

# An alias is a plain token and a signed relay address dash-separated tokens;
# %, !, quotes, routes and dots never are.
PLAIN_LOCAL = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def is_local_address(rcpt: str, alias_domain: str) -> bool:
    local, at, domain = rcpt.rpartition("@")
    return bool(at) and domain.lower() == alias_domain and PLAIN_LOCAL.fullmatch(local.lower())


def check(ctx: Context) -> Verdict | None:
    if is_local_address(ctx.envelope.rcpt_to, ctx.settings.alias_domain):
        return None
    return reject(f"relay access denied: this server only accepts mail for "
                  f"@{ctx.settings.alias_domain} aliases")


POLICY = Policy("relay_control", ("rcpt",), check, ALL_FLOWS)
