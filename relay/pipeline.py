"""The message pipeline: lookups -> policy chain -> rewrite -> deliver -> record and log.

It knows nothing of SMTP framing: the handler calls `rcpt` and `data` and sends back the
reply line each returns. Nothing is answered 250 before delivery says the message is safe.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from email.message import Message
from functools import lru_cache

from aliasdb import Store
from policies import chain
from policies.context import BOUNCE, CONTROL, SELLER_TO_BUYER, Context
from policies.loop import LOOP_HEADER
from policies.verdict import Action, Decision, Effect, Finding, reject
from relay import verp
from relay.control import ControlMail
from relay.delivery import Delivery, DeliveryError
from relay.dkim import DkimResult, Resolver, Signer, verify_inbound
from relay.dkim_body import relaxed_body_hash
from relay.facts import Facts, ids_in
from relay.logs import get_logger
from relay.parsing import Chunk, parse
from relay.rewrite import RewritePlan, rewrite_parts

OK_RCPT = "250 2.1.5 OK"
TEMPFAIL = "451 4.3.0 temporary failure, try again later"
INLINE_HASH_BYTES = 256 * 1024


@dataclass
class Outcome:
    reply: str
    decision: Decision
    record_id: str


class Pipeline:
    def __init__(self, store: Store, facts: Facts, policies: tuple[chain.Policy, ...],
                 delivery: Delivery, alias_domain: str, *, signer: Signer | None = None,
                 resolver: Resolver | None = None) -> None:
        self.store = store
        self.facts = facts
        self.policies = policies
        self.delivery = delivery
        self.alias_domain = alias_domain
        self.signer = signer
        self.resolver = resolver
        self.control = ControlMail(store, delivery, alias_domain, signer)
        self.log = get_logger()

    # -- RCPT --------------------------------------------------------------------------

    def rcpt(self, session: str, mail_from: str, rcpt: str, peer: str = "",
             auth_seller: str | None = None) -> tuple[str, Context]:
        """The reply to RCPT TO, and the context DATA builds on."""
        ctx = self.facts.for_rcpt(mail_from, rcpt, peer=peer, auth_seller=auth_seller)
        decision = chain.run(self.policies, ctx)
        if decision.action is Action.ACCEPT:
            return OK_RCPT, ctx
        self._finish(session, new_id(), ctx, decision, decision.smtp_reply(), 0, time.monotonic(),
                     record=ctx.alias is not None)
        return decision.smtp_reply(), ctx

    def refuse(self, session: str, ctx: Context, reply: str, size: int) -> None:
        """Record and log a refusal the handler made before parsing (``... (policy=x)``)."""
        head, _, policy = reply.rstrip(")").rpartition(" (policy=")
        code, status, reason = head.split(" ", 2)
        finding = Finding(policy, reject(reason, code=int(code), status=status))
        self._finish(session, new_id(), replace(ctx, stage="data"),
                     Decision((finding,), finding), reply, size, time.monotonic())

    # -- DATA --------------------------------------------------------------------------

    async def data(self, session: str, rcpt_ctx: Context, raw: bytes | bytearray) -> Outcome:
        started = time.monotonic()
        record_id = new_id()
        msg = parse(raw)
        ctx, threads = self.facts.for_data(rcpt_ctx, msg)
        if ctx.direction in (BOUNCE, CONTROL):
            return await self._control_mail(session, record_id, ctx, msg, len(raw), started)
        dkim = await self._dkim(ctx, raw)
        if dkim is not None:  # a new Context computes its subject and text again
            ctx = replace(ctx, dkim=dkim)
        decision = chain.run(self.policies, ctx)
        effects = decision.effects
        if effects:
            self._apply_effects(ctx, effects, record_id, delivered=False)
        if decision.action is not Action.ACCEPT:
            reply = decision.smtp_reply()
            await self._finish_grouped(session, record_id, ctx, decision, reply, len(raw),
                                       started)
            return Outcome(reply, decision, record_id)

        relay_msgid = f"<{secrets.token_hex(12)}@{self.alias_domain}>"
        to_service = any(e.kind == "route_customer_service" for e in effects)
        plan, rcpt = self._plan(ctx, msg, threads, relay_msgid, to_service)
        bounce_to = verp.bounce_address(self.store.secret, record_id, self.alias_domain)
        try:
            head, body = rewrite_parts(msg, plan)
            if self.signer is not None:
                head = await self._sign(head, body) + head
            await self.delivery.deliver(bounce_to, rcpt, [head, *body])
        except DeliveryError as exc:
            reply = f"{exc.code} {exc.status} {exc.text}"
            await self._finish_grouped(session, record_id, ctx, decision, reply, len(raw),
                                       started, outcome="rejected" if exc.permanent
                                       else "tempfail")
            return Outcome(reply, decision, record_id)

        if to_service:
            await self._tell_buyer_routed(ctx)
        reply = f"250 2.0.0 OK queued as {record_id}"
        original_msgid = (msg.get("Message-ID") or "").strip()

        def delivered() -> None:  # in the record's commit: the thread and the effects
            if original_msgid:
                self.store.add_thread(relay_msgid, original_msgid, ctx.alias.pair,
                                      ctx.direction, record_id)
            if effects:
                self._apply_effects(ctx, effects, record_id, delivered=True)

        # 250 only once the record is committed
        await self._finish_grouped(session, record_id, ctx, decision, reply, len(raw),
                                   started, writes=delivered)
        return Outcome(reply, decision, record_id)

    async def _control_mail(self, session: str, record_id: str, ctx: Context, msg: Message,
                            size: int, started: float) -> Outcome:
        try:
            reply, outcome = await self.control.handle(ctx, msg)
        except DeliveryError as exc:  # our notice could not go out: let the sender retry
            reply, outcome = f"451 {exc.status} {exc.text}", "tempfail"
        decision = Decision()
        await self._finish_grouped(session, record_id, ctx, decision, reply, size, started,
                                   outcome=outcome)
        return Outcome(reply, decision, record_id)

    async def _sign(self, head: bytes, body: list[Chunk]) -> bytes:
        """The DKIM-Signature field(s). A small body is hashed on the loop, where the hop
        to a thread would cost more; a big one in a thread."""
        if sum(map(len, body)) < INLINE_HASH_BYTES:
            return await self.signer.fields(head, relaxed_body_hash(body))
        return await self.signer.fields(head, await asyncio.to_thread(relaxed_body_hash, body))

    async def _dkim(self, ctx: Context, raw: bytes | bytearray) -> DkimResult | None:
        """Check a seller's DKIM on the MX listener; SMTP AUTH makes it unnecessary."""
        mode = ctx.settings.verify_inbound
        if (mode == "off" or ctx.direction != SELLER_TO_BUYER or ctx.envelope.auth_seller
                or len(ctx.from_addresses) != 1 or self.resolver is None):
            return None
        from_domain = ctx.from_addresses[0].rpartition("@")[2]
        return await asyncio.to_thread(verify_inbound, bytes(raw), from_domain, self.resolver)

    async def _tell_buyer_routed(self, ctx: Context) -> None:
        """The buyer learns where their message went; a failure here loses nothing."""
        try:
            await self.control.send_notice(
                ctx.buyer.address, ctx.buyer.name,
                "Your message was passed to the marketplace's customer service",
                f"The marketplace fulfils orders from {ctx.seller.name}, so delivery, returns "
                "and refunds are handled by its customer service, who have your message and "
                "will answer you. Questions about the products themselves still go to the "
                "seller.\n", sender="noreply", sender_name="Marketplace messages")
        except DeliveryError:
            self.log.warning("notice.failed", kind="customer_service", buyer=ctx.buyer.id)

    def _plan(self, ctx: Context, msg: Message, threads: list[dict], relay_msgid: str,
              to_service: bool = False) -> tuple[RewritePlan, str]:
        pair = ctx.alias.pair
        # the RCPT look-up read both live tokens; a side without one gets it from the store
        tokens = ctx.alias.pair_tokens or self.store.aliases(pair)
        seller_alias = f"{tokens['seller']}@{self.alias_domain}"
        buyer_alias = f"{tokens['buyer']}@{self.alias_domain}"
        seller, buyer = ctx.seller, ctx.buyer
        # every address the seller has on file, blocked ones too: all are theirs
        addresses = seller.addresses
        seller_real = set(self.store.sender_addresses(seller.id) if addresses is None
                          else addresses)
        if seller.inbox:
            seller_real.add(seller.inbox)
        if ctx.direction == SELLER_TO_BUYER:
            seller_real.update(a for a in (ctx.envelope.mail_from, *ctx.from_addresses) if a)
        replacements = {a.lower(): seller_alias for a in seller_real}
        replacements[buyer.address.lower()] = buyer_alias
        if ctx.direction == SELLER_TO_BUYER:
            sender = (seller.name, seller_alias)
            recipient = (buyer.name, buyer.address)
        elif to_service:
            sender = (buyer.name, buyer_alias)
            recipient = ("Customer service", ctx.settings.customer_service)
        else:
            sender = (buyer.name, buyer_alias)
            recipient = (seller.name, seller.inbox)
        in_reply_to, references = map_thread(msg, threads, ctx.direction)
        extra = [(LOOP_HEADER, self.alias_domain)]
        if ctx.auto_reply:
            extra.append(("Auto-Submitted", "auto-replied"))
        if ctx.direction == SELLER_TO_BUYER:
            optout = verp.optout_address(self.store.secret, tokens["buyer"], self.alias_domain)
            extra.append(("List-Unsubscribe", f"<mailto:{optout}?subject=unsubscribe>"))
        plan = RewritePlan(
            from_name=sender[0], from_addr=sender[1], to_name=recipient[0],
            to_addr=recipient[1], message_id=relay_msgid, in_reply_to=in_reply_to,
            references=references, replacements=replacements, extra_headers=tuple(extra))
        return plan, recipient[1]

    def _apply_effects(self, ctx: Context, effects: tuple[Effect, ...], record_id: str,
                       delivered: bool) -> None:
        for effect in effects:
            if effect.kind == "review_request":
                if delivered and effect.order_id:
                    self.store.add_review_request(effect.order_id, record_id)
            elif delivered:
                continue  # strikes and suspensions were applied before delivery
            elif effect.kind == "strike":
                self.store.add_strike(ctx.seller.id, effect.reason, record_id)
                self.log.warning("seller.strike", seller=ctx.seller.id, msg=record_id,
                                 reason=effect.reason)
                self._suspend_if_due(ctx, record_id)

    def _suspend_if_due(self, ctx: Context, record_id: str) -> None:
        """Count again after recording: another node or worker may have struck meanwhile."""
        settings = ctx.settings
        window = ctx.now - timedelta(days=settings.strike_window_days)
        if (self.store.count_strikes(ctx.seller.id, window) >= settings.strikes_to_suspend
                and not self.store.seller(ctx.seller.id).suspended):
            self.store.suspend_seller(ctx.seller.id)
            self.log.warning("seller.suspended", seller=ctx.seller.id, msg=record_id,
                             reason="[Important] misuse")

    def _finish(self, session: str, record_id: str, ctx: Context, decision: Decision,
                reply: str, size: int, started: float, *, record: bool = True,
                outcome: str | None = None) -> None:
        """Record and log one decision; ``outcome`` overrides the chain's (delivery, control)."""
        row, event = self._decided(session, record_id, ctx, decision, reply, size, started,
                                   record=record, outcome=outcome)
        if row is not None:
            self.store.add_message(row)
        self._log(event)

    async def _finish_grouped(self, session: str, record_id: str, ctx: Context,
                              decision: Decision, reply: str, size: int, started: float, *,
                              outcome: str | None = None,
                              writes: Callable[[], None] | None = None) -> None:
        """``_finish`` (after ``writes``, store calls of the same message) in a transaction
        shared with the messages finishing meanwhile (aliasdb.group); returns once it is
        committed, so the reply still follows the record."""
        if writes is None and ctx.alias is None:  # nothing to record: only the log line
            self._finish(session, record_id, ctx, decision, reply, size, started,
                         outcome=outcome)
            return
        event: dict = {}

        def record() -> None:  # store calls only: the group may run it twice
            if writes is not None:
                writes()
            row, logged = self._decided(session, record_id, ctx, decision, reply, size,
                                        started, outcome=outcome)
            if row is not None:
                self.store.add_message(row)
            event.update(logged)  # the log line says what the kept run wrote

        await self.store.write_grouped(record, lambda: self._log(event))

    def _decided(self, session: str, record_id: str, ctx: Context, decision: Decision,
                 reply: str, size: int, started: float, *, record: bool = True,
                 outcome: str | None = None) -> tuple[tuple | None, dict]:
        """The messages row of one decision (None: not recorded) and its log fields."""
        code = int(reply[:3])
        if outcome is None:
            outcome = _OUTCOMES[decision.action]
            decisive = decision.decisive
            deciding = decisive.policy if decisive else None
            reason = decisive.verdict.reason if decisive else None
        else:
            deciding = "delivery" if ctx.control is None else ctx.control.kind
            reason = reply[10:]
        pair = ctx.alias.pair if ctx.alias else None
        duration_ms = round((time.monotonic() - started) * 1000, 2)
        rule_ids = decision.rule_ids
        dkim = ctx.dkim.as_dict() if ctx.dkim is not None else None
        row = None
        if record and pair is not None:
            orders = ctx.referenced_orders
            # in the order of MESSAGE_COLUMNS
            row = (record_id, ctx.now.isoformat(timespec="seconds"), session, ctx.direction,
                   pair.id, pair.seller_id, pair.buyer_id, outcome, deciding, reason, code,
                   size, duration_ms, findings_json(decision.findings, dkim),
                   json.dumps(list(rule_ids)) if rule_ids else "[]",
                   orders[0].id if orders else None, int(ctx.auto_reply))
        event = {"msg": record_id, "session": session, "direction": ctx.direction,
                 "seller": pair.seller_id if pair else None,
                 "pair": pair.id if pair else None, "decision": outcome, "policy": deciding,
                 "reason": reason, "smtp_code": code, "size": size, "duration_ms": duration_ms,
                 "rule_ids": list(rule_ids), "dkim": dkim["result"] if dkim else None}
        return row, event

    def _log(self, event: dict) -> None:
        self.log.info("message.decided", **event)

    # -- dry run -----------------------------------------------------------------------

    def check(self, mail_from: str, rcpt: str, raw: bytes) -> Decision:
        """Run the whole chain on a message without sending or recording anything."""
        ctx = self.facts.for_rcpt(mail_from, rcpt)
        decision = chain.run(self.policies, ctx)
        if decision.action is not Action.ACCEPT:
            return decision
        data_ctx, _ = self.facts.for_data(ctx, parse(raw))
        after = chain.run(self.policies, data_ctx)
        return Decision(decision.findings + after.findings, after.decisive)


def new_id() -> str:
    return secrets.token_hex(8)


_OUTCOMES = {Action.ACCEPT: "delivered", Action.REJECT: "rejected",
             Action.TEMPFAIL: "tempfail"}


@lru_cache(maxsize=256)
def _passed_json(policy: str) -> str:
    return json.dumps(Finding(policy, None).as_dict())


def findings_json(findings: tuple[Finding, ...], dkim: dict | None) -> str:
    """The record's findings column: ``json.dumps`` of each finding's ``as_dict`` (after
    the inbound DKIM check's, if one ran), with the text of a passing finding made once
    per policy: most are passes, and their text depends on the policy alone."""
    parts = [] if dkim is None else [json.dumps({"check": "dkim", **dkim})]
    for finding in findings:
        parts.append(_passed_json(finding.policy) if finding.verdict is None
                     else json.dumps(finding.as_dict()))
    return f"[{', '.join(parts)}]"  # json.dumps's own separators for a list


def map_thread(msg: Message, threads: list[dict], direction: str) -> tuple[str | None,
                                                                          tuple[str, ...]]:
    """Translate the Message-IDs a message answers into the ones its recipient knows.

    A relay id of a message the other side sent becomes that message's original id; an
    original id of the sender's own earlier message becomes the relay id the recipient saw.
    Unknown ids are dropped: they can name the sender's provider.
    """
    known: dict[str, str] = {}
    for t in threads:
        if t["direction"] != direction:
            known[t["relay_msgid"]] = t["original_msgid"]
        else:
            known[t["original_msgid"]] = t["relay_msgid"]

    def mapped(name: str) -> list[str]:
        return [known[i] for i in ids_in(msg, name) if i in known]

    parents = mapped("In-Reply-To")
    references = tuple(dict.fromkeys(mapped("References") + parents))
    parent = parents[0] if parents else (references[-1] if references else None)
    return parent, references
