"""The submission listener: STARTTLS, then AUTH PLAIN/LOGIN as a seller, then the relay.

The password check (scrypt, tens of ms) runs in a thread so it does not stall other
sessions; repeated failures from one address lock that address out for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque

from aiosmtpd.smtp import AuthResult, LoginPassword

from aliasdb import Store
from relay.logs import get_logger
from relay.passwords import hash_password, verify_password
from relay.session import RelaySMTP

LOCKED = "454 4.7.0 too many failed logins from your address, try again later"
INVALID = "535 5.7.8 authentication credentials invalid"


class AuthGuard:
    """Failed logins per client address inside a sliding window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, peer: str) -> deque[float]:
        failures = self._failures[peer]
        cutoff = time.monotonic() - self.window
        while failures and failures[0] < cutoff:
            failures.popleft()
        if not failures:
            del self._failures[peer]
        return failures

    def locked(self, peer: str) -> bool:
        return len(self._recent(peer)) >= self.limit

    def failed(self, peer: str) -> None:
        self._failures[peer].append(time.monotonic())

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A hash to check unknown logins against, so they take as long as known ones."""
    if not _DUMMY:
        _DUMMY.append(hash_password("no such seller"))
    return _DUMMY[0]


def _pending(server, session, envelope, mechanism, auth_data) -> AuthResult:
    # aiosmtpd's authenticator is synchronous; hand the credentials on to be checked async
    return AuthResult(success=False, handled=False, auth_data=auth_data)


class SubmissionSMTP(RelaySMTP):
    def __init__(self, handler, connections: set, *, store: Store, guard: AuthGuard,
                 **kwargs) -> None:
        super().__init__(handler, connections, require_starttls=True, auth_required=True,
                         auth_require_tls=True, authenticator=_pending, **kwargs)
        self.store = store
        self.guard = guard

    def _peer_ip(self) -> str:
        peer = self.session.peer
        return peer[0] if isinstance(peer, tuple) else str(peer)

    async def smtp_AUTH(self, arg: str) -> None:
        if self.guard.locked(self._peer_ip()):
            await self.push(LOCKED)
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _, args) -> AuthResult:
        return await self._check(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _, args) -> AuthResult:
        return await self._check(await super().auth_LOGIN(_, args))

    async def _check(self, result: AuthResult) -> AuthResult:
        creds = result.auth_data
        if not isinstance(creds, LoginPassword):
            return result  # a syntax error aiosmtpd has answered already
        seller_id = creds.login.decode("utf-8", "replace")
        stored = self.store.password_hash(seller_id)
        matches = await asyncio.to_thread(verify_password, creds.password,
                                          stored or _dummy_hash())
        ok = stored is not None and matches
        log = get_logger(session=self.session.relay_id)
        if not ok:
            self.guard.failed(self._peer_ip())
            log.warning("auth.failed")
            return AuthResult(success=False, handled=False, message=INVALID)
        self.guard.succeeded(self._peer_ip())
        log.info("auth.ok", seller=seller_id)
        return AuthResult(success=True, auth_data=seller_id)
