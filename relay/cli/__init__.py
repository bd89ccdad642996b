"""The `relay` command line: one click group, one module per area of responsibility.

Each module exposes ``register(group)``; the order below is the order of `relay --help`.
"""

from __future__ import annotations

import importlib

import click

from relay.cli import bootstrap, credentials, db, dkim, messages, orders, parties
from relay.cli.common import RelayGroup


@click.group(cls=RelayGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Anonymizing buyer-seller mail relay."""


for _module in (bootstrap, parties, credentials, orders, messages, dkim, db):
    _module.register(main)

# `relay serve` and `relay policy` live in their own modules, which may not exist yet:
# the CLI must work without them, but an error inside one of them must still show.
for _name in ("serve", "policy"):
    try:
        _mod = importlib.import_module(f"relay.cli.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"relay.cli.{_name}":
            raise
    else:
        _mod.register(main)

__all__ = ["main"]
