"""`relay seller passwd`: the seller's password for the submission port."""

from __future__ import annotations

import sys

import click

from relay.cli.common import SELLER_ID, config_option, fail, open_store
from relay.config import Config
from relay.passwords import hash_password

MIN_LENGTH = 12


def register(group: click.Group) -> None:
    seller = group.commands["seller"]

    @seller.command("passwd")
    @click.argument("seller_id", type=SELLER_ID)
    @click.option("--stdin", "from_stdin", is_flag=True,
                  help="Read the password from the first line of standard input.")
    @config_option
    def passwd(seller_id: str, from_stdin: bool, config: Config) -> None:
        """Set SELLER_ID's submission-port password (prompted, or --stdin)."""
        store = open_store(config)
        store.seller(seller_id)  # unknown seller: one-line error before any prompt
        if from_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                    err=True)
        if len(password) < MIN_LENGTH:
            fail(f"password too short: at least {MIN_LENGTH} characters")
        store.set_password_hash(seller_id, hash_password(password))
        click.echo(f"password set for seller {seller_id}")
