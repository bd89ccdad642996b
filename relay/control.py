"""Mail to the relay's own signed addresses: bounces (VERP) and buyers' opt-out / opt-in.

Each returns the SMTP reply and the outcome to record. What the relay sends back is a
notice of its own (relay/notices.py), always from the null sender, never to one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import Message

from aliasdb import Store
from policies.context import SELLER_TO_BUYER, Context
from relay import bounces, notices
from relay.delivery import Delivery
from relay.dkim import Signer
from relay.dkim_body import relaxed_body_hash
from relay.logs import get_logger
from relay.verp import optout_address

BOUNCES_TO_FLAG = 3  # hard bounces of one buyer address ...
BOUNCE_WINDOW = timedelta(days=30)  # ... inside this window flag it as not accepting mail

REASONS = {
    "hard": "it could not be delivered: the recipient's mail system refused it permanently",
    "soft": "its delivery is delayed: the recipient's mail system is not accepting it "
            "for now, and it will keep trying for a few days",
}


class ControlMail:
    def __init__(self, store: Store, delivery: Delivery, domain: str,
                 signer: Signer | None) -> None:
        self.store = store
        self.delivery = delivery
        self.domain = domain
        self.signer = signer
        self.log = get_logger()

    async def handle(self, ctx: Context, msg: Message) -> tuple[str, str]:
        if ctx.control.kind == "bounce":
            return await self.bounce(ctx, msg)
        return await self.optout(ctx)

    async def bounce(self, ctx: Context, msg: Message) -> tuple[str, str]:
        kind = bounces.classify(msg)
        if kind is None:
            if ctx.auto_reply:  # an out-of-office sent to the envelope sender: never answered
                return "250 2.0.0 OK, automatic reply discarded", "discarded"
            return ("550 5.7.1 this address only takes delivery-status notifications; "
                    "reply to the address in the From header", "rejected")
        original = self.store.find_message(ctx.control.value)
        self.store.mark_bounce(original["id"], kind)
        if kind == "hard" and original["direction"] == SELLER_TO_BUYER:
            self._flag_if_bouncing(original["buyer_id"])
        await self._notify_sender(ctx, original, kind)
        return f"250 2.0.0 OK, {kind} bounce recorded", f"bounce_{kind}"

    def _flag_if_bouncing(self, buyer_id: str) -> None:
        recent = self.store.count_hard_bounces(buyer_id, datetime.now(UTC) - BOUNCE_WINDOW)
        if recent >= BOUNCES_TO_FLAG and not self.store.buyer(buyer_id).bouncing:
            self.store.set_bouncing(buyer_id, True)
            self.log.warning("buyer.bouncing", buyer=buyer_id, hard_bounces=recent)

    async def _notify_sender(self, ctx: Context, original: dict, kind: str) -> None:
        """Tell the original sender, in our words: the alias, the order, the reason class."""
        tokens = self.store.aliases(ctx.alias.pair)
        if original["direction"] == SELLER_TO_BUYER:
            seller = ctx.seller
            to = seller.inbox or next(iter(sorted(ctx.seller_senders)), None)
            to_name, alias = seller.name, f"{tokens['buyer']}@{self.domain}"
        else:
            to, to_name = ctx.buyer.address, ctx.buyer.name
            alias = f"{tokens['seller']}@{self.domain}"
        if to is None:
            self.log.warning("bounce.no_one_to_tell", msg=original["id"])
            return
        about = f" about order {original['order_id']}" if original.get("order_id") else ""
        body = (f"Your message{about} to {alias} (sent {original['ts'][:10]}, reference "
                f"{original['id']}): {REASONS[kind]}.\n\nThis notice was written by the "
                "marketplace's mail relay; replies to it are not read.\n")
        subject = ("Undeliverable" if kind == "hard" else "Delayed") + f": your message{about}"
        await self.send_notice(to, to_name, subject, body)

    async def optout(self, ctx: Context) -> tuple[str, str]:
        buyer = ctx.buyer
        if ctx.envelope.mail_from != buyer.address.lower():
            return ("550 5.7.1 this address only works from the buyer's registered address",
                    "rejected")
        opt_out = ctx.control.kind == "optout"
        self.store.set_optout(buyer.id, opt_out)
        self.log.info("buyer.optout" if opt_out else "buyer.optin", buyer=buyer.id)
        again = optout_address(self.store.secret, ctx.control.value, self.domain,
                               "optin" if opt_out else "optout")
        if opt_out:
            subject = "You will no longer receive seller messages by email"
            body = ("You have opted out of messages from sellers. Critical messages about "
                    "your orders (customization, delivery scheduling, shipping-address "
                    f"problems) still reach you.\n\nTo opt back in, send any email to {again}\n")
        else:
            subject = "You will receive seller messages by email again"
            body = f"You have opted back in to messages from sellers.\n\nTo opt out, send " \
                   f"any email to {again}\n"
        await self.send_notice(buyer.address, buyer.name, subject, body, sender="noreply",
                         sender_name="Marketplace messages")
        return f"250 2.0.0 OK, {'opted out' if opt_out else 'opted in'}", ctx.control.kind

    async def send_notice(self, to: str, to_name: str | None, subject: str, body: str, *,
                    sender: str = "mailer-daemon",
                    sender_name: str = "Mail Delivery System") -> None:
        data = notices.build(domain=self.domain, to_addr=to, to_name=to_name, subject=subject,
                             body=body, sender=sender, sender_name=sender_name)
        if self.signer is not None:
            head, sep, body = data.partition(b"\r\n\r\n")
            data = await self.signer.fields(head + sep, relaxed_body_hash([body])) + data
        # from the null sender, so a notice that cannot be delivered is not bounced again
        await self.delivery.deliver("", to, data)

