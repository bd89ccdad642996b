"""What a policy says about a message, and the side effects it asks the pipeline for."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True)
class Effect:
    """A change the pipeline applies after the decision; policies never do I/O themselves.

    kinds: ``strike`` (an [Important] misuse against the seller; the pipeline suspends
    the seller once the strikes reach the limit, counting again after recording it),
    ``suspend`` (the policy saw this strike reach the limit: for the record),
    ``review_request`` (a neutral review request was made for ``order_id``),
    ``route_customer_service`` (deliver to the marketplace's customer service).
    """

    kind: str
    reason: str = ""
    order_id: str | None = None


@dataclass(frozen=True)
class Verdict:
    action: Action
    code: int = 250
    status: str = "2.0.0"
    reason: str = ""
    effects: tuple[Effect, ...] = ()
    rule_ids: tuple[str, ...] = ()

    @property
    def final(self) -> bool:
        return self.action is not Action.ACCEPT


def reject(reason: str, *, code: int = 550, status: str = "5.7.1",
           rule_ids: tuple[str, ...] = (), effects: tuple[Effect, ...] = ()) -> Verdict:
    return Verdict(Action.REJECT, code, status, reason, effects, rule_ids)


def tempfail(reason: str, *, code: int = 451, status: str = "4.3.0") -> Verdict:
    return Verdict(Action.TEMPFAIL, code, status, reason)


def note(reason: str, *, rule_ids: tuple[str, ...] = (),
         effects: tuple[Effect, ...] = ()) -> Verdict:
    """An accepting finding worth recording (rules that hit below threshold, a strike)."""
    return Verdict(Action.ACCEPT, 250, "2.0.0", reason, effects, rule_ids)


@dataclass(frozen=True)
class Finding:
    policy: str
    verdict: Verdict | None

    def as_dict(self) -> dict:
        if self.verdict is None:
            return {"policy": self.policy, "result": "pass"}
        v = self.verdict
        return {
            "policy": self.policy,
            "result": v.action.value,
            "code": v.code,
            "status": v.status,
            "reason": v.reason,
            "rule_ids": list(v.rule_ids),
            "effects": [e.kind for e in v.effects],
        }


@dataclass(frozen=True)
class Decision:
    """The outcome of a chain run: the deciding finding (if any) and every finding."""

    findings: tuple[Finding, ...] = field(default_factory=tuple)
    decisive: Finding | None = None

    @property
    def action(self) -> Action:
        return self.decisive.verdict.action if self.decisive else Action.ACCEPT

    @property
    def effects(self) -> tuple[Effect, ...]:
        return tuple(e for f in self.findings if f.verdict for e in f.verdict.effects)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r for f in self.findings if f.verdict for r in f.verdict.rule_ids)

    def smtp_reply(self) -> str:
        """The SMTP reply line for a refusal, naming the deciding policy."""
        if self.decisive is None:
            return "250 2.0.0 OK"
        v = self.decisive.verdict
        return f"{v.code} {v.status} {v.reason} (policy={self.decisive.policy})"
