"""A buyer who opted out gets nothing, except critical messages tagged [Important].

[Important] on a message that is not critical earns the seller a strike, whether or not
the buyer opted out; enough strikes inside the window suspend the seller.
"""

from __future__ import annotations

from policies import critical
from policies.chain import Policy
from policies.context import SELLER_TO_BUYER, Context
from policies.reasons import TOPIC_WORDS
from policies.verdict import Effect, Verdict, note, reject

CRITICAL = "product customization, delivery scheduling or a shipping-address issue"


def check(ctx: Context) -> Verdict | None:
    opted_out = ctx.buyer is not None and ctx.buyer.opted_out
    if not critical.has_important_tag(ctx.subject):
        if opted_out:
            return reject("the buyer has opted out of seller messages; only critical messages "
                          f"({CRITICAL}) marked [Important] in the subject are delivered")
        return None
    result = critical.classify(ctx.settings.content_rules, ctx.subject, ctx.text)
    if not result.legit:
        return _misuse(ctx, opted_out, result.rule_ids)
    reasons = ctx.settings.contact_reasons
    why = reasons.why_not(result.topic, ctx.referenced_orders) if reasons else None
    if why is not None:
        if opted_out:
            return reject(f"the buyer has opted out and this message is not critical now: {why}",
                          rule_ids=result.rule_ids)
        return note(f"[Important] outside its window: {why}", rule_ids=result.rule_ids)
    return note(f"[Important] accepted for {TOPIC_WORDS[result.topic]}",
                rule_ids=result.rule_ids)


def _misuse(ctx: Context, opted_out: bool, rule_ids: tuple[str, ...]) -> Verdict:
    settings = ctx.settings
    strike = Effect("strike", "[Important] on a message that is not critical")
    if ctx.recent_strikes + 1 >= settings.strikes_to_suspend:
        return reject(
            f"[Important] is only for {CRITICAL}; this is misuse number "
            f"{ctx.recent_strikes + 1} in {settings.strike_window_days} days, so your buyer "
            "messaging is suspended until the marketplace's seller support reinstates it",
            rule_ids=rule_ids, effects=(strike, Effect("suspend", "[Important] misuse")))
    if opted_out:
        return reject(f"the buyer has opted out, and [Important] is only for {CRITICAL}; a "
                      "strike was recorded against your account", rule_ids=rule_ids,
                      effects=(strike,))
    return note(f"[Important] misused: a strike was recorded (only for {CRITICAL})",
                rule_ids=rule_ids, effects=(strike,))


POLICY = Policy("optout", ("data",), check, (SELLER_TO_BUYER,))
