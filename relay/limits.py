"""Connection and rate limits (`[limits]`): bookkeeping only, no I/O.

The SMTP protocol object (relay.session.RelaySMTP) asks and acts: it answers `421 4.7.0`
and closes a session past the concurrent-session limits or the command caps, and answers
`450 4.7.1` to a MAIL FROM past the per-client message rate.

A "client" is an IPv4 address, or an IPv6 /64 (one customer's network: a host there can
pick any of 2**64 addresses, so a per-address count would not limit anything).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

TOO_MANY_CONNECTIONS = "421 4.7.0 {host} too many connections, try again later"
TOO_MANY_FROM_YOU = "421 4.7.0 {host} too many connections from your address, try again later"
TOO_MANY_COMMANDS = "421 4.7.0 {host} too many commands in one session, closing"
TOO_MANY_UNKNOWN = "421 4.7.0 {host} too many unrecognized commands, closing"
TOO_MANY_MESSAGES = "450 4.7.1 too many messages from your address, try again later"


def client_key(peer: Any) -> str:
    """The address limits are counted by: IPv4 as is, IPv6 as its /64, else ''."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return ""  # a Unix socket or an unknown peer: one shared bucket
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Limits:
    """Shared by every session of one relay (MX and submission listeners alike)."""

    def __init__(self, *, max_connections: int = 200, max_connections_per_ip: int = 20,
                 max_commands: int = 500, max_unknown_commands: int = 10,
                 messages_per_ip_per_minute: int = 120,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.max_commands = max_commands
        self.max_unknown_commands = max_unknown_commands
        self.rate = messages_per_ip_per_minute
        self.clock = clock
        self.connections = 0
        self.per_client: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    @classmethod
    def from_config(cls, limits: Mapping[str, Any]) -> Limits:
        keys = ("max_connections", "max_connections_per_ip", "max_commands",
                "max_unknown_commands", "messages_per_ip_per_minute")
        return cls(**{key: limits[key] for key in keys})

    # -- concurrent sessions -----------------------------------------------------------

    def open(self, client: str) -> str | None:
        """Count a new session in; the refusal template when it is over a limit."""
        if self.connections >= self.max_connections:
            return TOO_MANY_CONNECTIONS
        if self.per_client.get(client, 0) >= self.max_connections_per_ip:
            return TOO_MANY_FROM_YOU
        self.connections += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return None

    def close(self, client: str) -> None:
        """Count a session out (only sessions `open` admitted)."""
        self.connections -= 1
        left = self.per_client.get(client, 0) - 1
        if left > 0:
            self.per_client[client] = left
        else:
            self.per_client.pop(client, None)

    # -- message rate ------------------------------------------------------------------

    def allow_message(self, client: str) -> bool:
        """Take one token from the client's bucket: `rate` per minute, bursts up to `rate`."""
        now = self.clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= 10_000:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.rate), now)
        bucket.tokens = min(float(self.rate),
                            bucket.tokens + (now - bucket.stamp) * self.rate / 60.0)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely: they hold no information."""
        full_after = 60.0  # an empty bucket is full again after a minute
        for client in [c for c, b in self._buckets.items() if now - b.stamp >= full_after]:
            del self._buckets[client]
