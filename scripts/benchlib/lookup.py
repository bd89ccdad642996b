"""Alias look-up cost against the size of the database: Store.resolve_alias, as the relay
calls it at RCPT, on a database of 10 thousand and one of a million pairs.

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
        resolve = store.resolve_alias
        for token in tokens:  # warm-up; also checks every token resolves
            if resolve(token) is None:
                raise RuntimeError(f"seeded alias {token} does not resolve in {path}")
        times = []
        for _ in range(rounds):
            rng.shuffle(tokens)
            started = time.perf_counter()
            for token in tokens:
                resolve(token)
            times.append((time.perf_counter() - started) / len(tokens) * 1e6)
    finally:
        store.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return LookupResult(pairs, size, 0.0, statistics.median(times), times)


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
