"""The record and the log line of a decision: the same row and the same fields as the
pipeline wrote before it built the row itself (the old code is kept below as the oracle),
on every path: RCPT refusals, DATA refusals, delivery and control outcomes, delivered
messages through the group commit."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from email import message_from_string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliasdb import Store
from aliasdb.models import Alias, Order, Pair
from policies import chain
from policies.content_rules import load_rules
from policies.context import BOUNCE, BUYER_TO_SELLER, SELLER_TO_BUYER, Context, Envelope
from policies.context import Settings as PolicySettings
from policies.registry import REGISTRY
from policies.verdict import Action, Decision, Effect, Finding, Verdict
from relay import pipeline as pipeline_module
from relay.delivery import DeliveryError
from relay.dkim_verify import DkimResult
from relay.facts import Facts
from relay.pipeline import Pipeline, findings_json
from relay.verp import ControlAddress
from tests.conftest import ORDER, SELLER_ADDR, seed
from tests.test_content import RULES_PATH
from tests.test_e2e_relay import seller_message

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def old_finish(store, log, session, record_id, ctx, decision, reply, size, started, *,
               record=True, outcome=None) -> None:
    """Pipeline._finish as it was (commit 9f808ff), writing through Store.record_message."""
    code = int(reply[:3])
    if outcome is None:
        outcome = {Action.ACCEPT: "delivered", Action.REJECT: "rejected",
                   Action.TEMPFAIL: "tempfail"}[decision.action]
        deciding = decision.decisive.policy if decision.decisive else None
        reason = decision.decisive.verdict.reason if decision.decisive else None
    else:
        deciding = "delivery" if ctx.control is None else ctx.control.kind
        reason = reply[10:]
    pair = ctx.alias.pair if ctx.alias else None
    fields = {
        "id": record_id,
        "session": session,
        "direction": ctx.direction,
        "pair_id": pair.id if pair else None,
        "seller_id": pair.seller_id if pair else None,
        "buyer_id": pair.buyer_id if pair else None,
        "decision": outcome,
        "policy": deciding,
        "reason": reason,
        "smtp_code": code,
        "size": size,
        "duration_ms": round((time.monotonic() - started) * 1000, 2),
        "order_id": ctx.referenced_orders[0].id if ctx.referenced_orders else None,
        "auto_reply": int(ctx.auto_reply),
    }
    dkim = ctx.dkim.as_dict() if ctx.dkim is not None else None
    if record and pair is not None:
        findings = [f.as_dict() for f in decision.findings]
        if dkim is not None:
            findings.insert(0, {"check": "dkim", **dkim})
        store.record_message({
            **fields, "ts": ctx.now.isoformat(timespec="seconds"),
            "findings": findings, "rule_ids": list(decision.rule_ids)})
    log.info("message.decided", msg=record_id, session=session,
             direction=ctx.direction, seller=fields["seller_id"],
             pair=fields["pair_id"], decision=outcome, policy=deciding, reason=reason,
             smtp_code=code, size=size, duration_ms=fields["duration_ms"],
             rule_ids=list(decision.rule_ids),
             dkim=dkim["result"] if dkim else None)


class Captured:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def info(self, event: str, **fields) -> None:
        self.events.append((event, fields))

    warning = info


class NullDelivery:
    async def deliver(self, mail_from, rcpt, data) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture
def stores(tmp_path):
    new, old = Store.open(tmp_path / "new.db"), Store.open(tmp_path / "old.db")
    yield new, old
    new.close()
    old.close()


def _pipeline(store: Store) -> Pipeline:
    pipeline = Pipeline(store, Facts(store, PolicySettings()), (), NullDelivery(),
                        "relay.example")
    pipeline.log = Captured()
    return pipeline


# -- the findings column -------------------------------------------------------------------

_text = st.text(min_size=0, max_size=20)
_verdicts = st.builds(
    Verdict, st.sampled_from(list(Action)), st.integers(200, 599), _text, _text,
    st.lists(st.builds(Effect, _text, _text, st.none() | _text), max_size=2).map(tuple),
    st.lists(_text, max_size=3).map(tuple))
_findings = st.lists(st.builds(Finding, st.sampled_from(["loop", "content", "x\"y", "é"]),
                               st.none() | _verdicts), max_size=8).map(tuple)
_dkim = st.none() | st.builds(DkimResult, _text, st.lists(_text, max_size=2).map(tuple),
                              st.booleans(), _text)


@given(_findings, _dkim)
def test_findings_json_is_what_json_dumps_made(findings, dkim):
    as_dict = None if dkim is None else dkim.as_dict()
    old = [f.as_dict() for f in findings]
    if as_dict is not None:
        old.insert(0, {"check": "dkim", **as_dict})
    assert findings_json(findings, as_dict) == json.dumps(old)


# -- every path of _finish -----------------------------------------------------------------

PAIR = Pair(7, "s1", "b1")
ALIAS = Alias("tok", PAIR, "buyer", False)
ORDERS = (Order(ORDER, "s1", "b1", None, "shipped", None),)


def _message(subject: str, auto: bool) -> object:
    head = f"Subject: {subject}\nFrom: {SELLER_ADDR}\n"
    if auto:
        head += "Auto-Submitted: auto-replied\n"
    return message_from_string(head + "\nHello about your order.\n")


_contexts = st.builds(
    lambda stage, alias, direction, subject, auto, dkim, control, reply: Context(
        stage, Envelope(SELLER_ADDR, "tok@relay.example"), PolicySettings(), NOW,
        alias=alias, direction=direction,
        message=_message(subject, auto) if stage == "data" else None,
        orders=ORDERS if alias is not None else (), dkim=dkim, control=control,
        is_reply=reply),
    st.sampled_from(["rcpt", "data"]), st.none() | st.just(ALIAS),
    st.sampled_from([SELLER_TO_BUYER, BUYER_TO_SELLER, BOUNCE, None]),
    st.sampled_from(["Hello", f"Order {ORDER}", "[Important] ünïcode"]), st.booleans(),
    _dkim, st.none() | st.just(ControlAddress("optout", "tok", True)), st.booleans())


def _decision(findings: tuple[Finding, ...]) -> Decision:
    for finding in findings:
        if finding.verdict is not None and finding.verdict.final:
            return Decision(findings, finding)
    return Decision(findings, None)


def _row(store: Store, record_id: str) -> dict | None:
    row = store._one("SELECT * FROM messages WHERE id = ?", record_id)
    return None if row is None else dict(row)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ctx=_contexts, findings=_findings,
       reply=st.sampled_from(["250 2.0.0 OK queued as x", "550 5.7.1 no (policy=content)",
                              "451 4.3.0 try later", "554 5.0.0 the next hop refused it"]),
       record=st.booleans(), override=st.none() | st.sampled_from(["rejected", "tempfail"]),
       size=st.integers(0, 10**7))
def test_finish_writes_and_logs_what_it_did_before(stores, monkeypatch, ctx, findings, reply,
                                                   record, override, size):
    new, old = stores
    monkeypatch.setattr(pipeline_module.time, "monotonic", lambda: 100.0)
    pipeline = _pipeline(new)
    record_id = f"r{len(new.list_messages(limit=10**6))}"
    decision = _decision(findings)
    started = 99.98765
    pipeline._finish("sess", record_id, ctx, decision, reply, size, started, record=record,
                     outcome=override)
    oracle = Captured()
    old_finish(old, oracle, "sess", record_id, ctx, decision, reply, size, started,
               record=record, outcome=override)
    assert _row(new, record_id) == _row(old, record_id)
    assert pipeline.log.events == oracle.events
    if old.find_message(record_id) is not None:
        assert new.find_message(record_id) == old.find_message(record_id)


# -- DATA's outcomes, through the group commit ---------------------------------------------

POLICY_ORDER = ("relay_control", "seller_status", "authorized_sender", "order_reference",
                "content", "attachments")


# what each message of a group is: (subject, what the next hop says of it)
DELIVERED = (f"Your order {ORDER} has shipped", None)
REFUSED = ("Hello", None)  # no order named: order_reference refuses it
BOUNCED = (f"Your order {ORDER} is on its way",
           DeliveryError(550, "5.1.1", "no such user", permanent=True))
DEFERRED = (f"Your order {ORDER} was posted", DeliveryError(451, "4.4.1", "try later"))


class NextHop(NullDelivery):
    """Answers each message as its subject says (see the groups below)."""

    async def deliver(self, mail_from, rcpt, data) -> None:
        for subject, error in (BOUNCED, DEFERRED):
            if error is not None and f"Subject: {subject}".encode() in data[0]:
                raise error


@pytest.mark.parametrize("group", [
    [DELIVERED] * 3, [REFUSED] * 3, [BOUNCED, DEFERRED], [DELIVERED, REFUSED, DELIVERED],
    [REFUSED]])
def test_data_outcomes_share_a_commit_and_keep_the_old_row_and_log(tmp_path, monkeypatch,
                                                                   group):
    store = Store.open(tmp_path / "relay.db")
    oracle_store = Store.open(tmp_path / "oracle.db")
    reader = Store.open(tmp_path / "relay.db")  # sees only what was committed
    try:
        store.ensure_secret()
        parties = seed(store)
        policies = chain.build(POLICY_ORDER, REGISTRY)
        settings = PolicySettings(content_rules=load_rules(RULES_PATH))
        pipeline = Pipeline(store, Facts(store, settings), policies, NextHop(),
                            "relay.example")
        pipeline.log = Captured()
        monkeypatch.setattr(pipeline_module.time, "monotonic", lambda: 50.0)
        seen, commits = [], []
        decided, transaction = pipeline._decided, store.backend.transaction

        def spy(*args, **kwargs):
            seen.append((args, kwargs))
            return decided(*args, **kwargs)

        def counted():
            commits.append(1)
            return transaction()

        monkeypatch.setattr(pipeline, "_decided", spy)
        monkeypatch.setattr(store.backend, "transaction", counted)
        to = parties.buyer_alias

        async def one(subject: str, error: DeliveryError | None):
            ctx = pipeline.rcpt("sess", SELLER_ADDR, to)[1]
            outcome = await pipeline.data("sess", ctx, seller_message(to, subject=subject))
            assert reader.find_message(outcome.record_id) is not None  # committed first
            return outcome

        async def main():
            return await asyncio.gather(*(one(*message) for message in group))

        outcomes = asyncio.run(main())
        expected = ["250" if m is DELIVERED else "550" if m in (REFUSED, BOUNCED) else "451"
                    for m in group]
        assert [o.reply[:3] for o in outcomes] == expected, outcomes
        assert len(commits) == 1  # the whole group in one transaction
        oracle = Captured()
        for args, kwargs in seen:
            old_finish(oracle_store, oracle, *args, **kwargs)
        decided_events = [e for e in pipeline.log.events if e[0] == "message.decided"]
        assert decided_events == oracle.events and len(decided_events) == len(group)
        for outcome in outcomes:
            assert _row(store, outcome.record_id) == _row(oracle_store, outcome.record_id)
    finally:
        reader.close()
        store.close()
        oracle_store.close()
