"""Alias look-up cost against the size of the database, on a database of 10 thousand and
one of a million pairs: Store.resolve_alias (token to alias, one primary-key probe) and,
where the relay has it, Store.recipient, the whole RCPT read (the alias, its pair's live
tokens, the seller with its senders, the buyer: one statement, several B-trees).

Tokens are drawn at random over all pairs (real traffic has no locality), looked up
once to warm the OS page cache, then timed in several rounds; the median round counts.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from aliasdb import Store
from benchlib.seed import lookup_tokens, seed


@dataclass
class LookupResult:
    pairs: int
    db_bytes: int
    build_seconds: float
    us_per_lookup: float
    rounds: list[float]
    us_per_recipient: float | None = None  # Store.recipient, when the relay has it


def build(path: Path, pairs: int) -> tuple[str, float]:
    started = time.perf_counter()
    secret = seed(path, pairs, orders=False)
    return secret, time.perf_counter() - started


def measure(path: Path, secret: str, pairs: int, *, lookups: int = 20_000,
            rounds: int = 5, seed_value: int = 3) -> LookupResult:
    rng = random.Random(seed_value)
    tokens = lookup_tokens(secret, pairs, lookups, rng)
    store = Store.open(path)  # a fresh connection with the relay's own settings
    try:
        times = _timed(store.resolve_alias, tokens, rounds, rng, path)
        recipient = getattr(store, "recipient", None)
        per_recipient = (statistics.median(_timed(recipient, tokens, rounds, rng, path))
                         if recipient is not None else None)
    finally:
        store.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return LookupResult(pairs, size, 0.0, statistics.median(times), times, per_recipient)


def _timed(look_up, tokens: list[str], rounds: int, rng: random.Random,
           path: Path) -> list[float]:
    """µs per call in each round, after a warm-up pass that checks every token resolves."""
    for token in tokens:
        if look_up(token) is None:
            raise RuntimeError(f"seeded alias {token} does not resolve in {path}")
    times = []
    for _ in range(rounds):
        rng.shuffle(tokens)
        started = time.perf_counter()
        for token in tokens:
            look_up(token)
        times.append((time.perf_counter() - started) / len(tokens) * 1e6)
    return times


def run(workdir: Path, pair_counts: list[int], *, lookups: int = 20_000,
        rounds: int = 5) -> list[LookupResult]:
    results = []
    for pairs in pair_counts:
        path = workdir / f"lookup-{pairs}.db"
        secret, seconds = build(path, pairs)
        result = measure(path, secret, pairs, lookups=lookups, rounds=rounds)
        result.build_seconds = seconds
        results.append(result)
    return results
