"""Every policy by name, in one explicit table; `[policy] order` picks from it."""

from __future__ import annotations

from policies import (
    attachments,
    authorized_sender,
    auto_reply,
    buyer_messages,
    buyer_sender,
    content,
    cutoff,
    deliverable,
    fulfilment,
    known_alias,
    loop,
    optout,
    order_reference,
    relay_control,
    seller_status,
)
from policies.chain import Policy
from policies.context import SELLER_TO_BUYER

REGISTRY: dict[str, Policy] = {
    p.name: p
    for p in (
        relay_control.POLICY,
        known_alias.POLICY,
        deliverable.POLICY,
        seller_status.POLICY,
        authorized_sender.POLICY,
        buyer_sender.POLICY,
        buyer_messages.POLICY,
        fulfilment.POLICY,
        loop.POLICY,
        auto_reply.POLICY,
        order_reference.POLICY,
        cutoff.POLICY,
        optout.POLICY,
        Policy("content", ("data",), content.check, (SELLER_TO_BUYER,)),
        attachments.POLICY,
    )
}
