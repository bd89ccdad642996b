"""Runs policies in the configured order; the first reject or tempfail decides.

Every policy's finding is kept, so the record and the log say what each one thought.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from policies.context import BUYER_TO_SELLER, SELLER_TO_BUYER, Context
from policies.verdict import Decision, Finding, Verdict

Check = Callable[[Context], Verdict | None]


@dataclass(frozen=True)
class Policy:
    name: str
    stages: tuple[str, ...]  # "rcpt" and/or "data"
    check: Check
    directions: tuple[str, ...] = (SELLER_TO_BUYER, BUYER_TO_SELLER)  # flows it applies to


def run(policies: Iterable[Policy], ctx: Context) -> Decision:
    findings: list[Finding] = []
    for policy in policies:
        if ctx.stage not in policy.stages:
            continue
        if ctx.direction is not None and ctx.direction not in policy.directions:
            continue
        finding = Finding(policy.name, policy.check(ctx))
        findings.append(finding)
        if finding.verdict is not None and finding.verdict.final:
            return Decision(tuple(findings), finding)
    return Decision(tuple(findings), None)


def build(order: Sequence[str], registry: dict[str, Policy]) -> tuple[Policy, ...]:
    """The chain for a configured order; an unknown name is a configuration error."""
    unknown = [name for name in order if name not in registry]
    if unknown:
        raise ValueError(f"unknown policy in [policy] order: {', '.join(unknown)}")
    return tuple(registry[name] for name in order)
