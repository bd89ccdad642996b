"""`relay init`: everything the relay needs on disk, created when missing, never replaced."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import click

from relay.cli.common import config_option, fail, open_store
from relay.config import Config


def _dkim_module() -> ModuleType | None:
    """relay.dkim arrives with its own issue; until then init skips the key."""
    try:
        return importlib.import_module("relay.dkim")
    except ModuleNotFoundError as exc:
        if exc.name != "relay.dkim":
            raise
        return None


@click.command("init")
@config_option
def init_command(config: Config) -> None:
    """Create the database (schema), the alias secret and the Maildir folder (idempotent)."""
    path = config["database"]["path"]
    existed = str(path) == ":memory:" or Path(path).exists()
    store = open_store(config, require_init=False)
    if config.database_url:  # PostgreSQL: the operator created the database; we fill it
        existed = bool(store.migrated_from)
    state = "present" if existed else "created"
    click.echo(f"database {store.where}: {state} (schema version {store.schema_version()})")
    # on several nodes, the first `relay init` creates the secret and the others share it
    click.echo("alias secret: created" if store.ensure_secret() else "alias secret: present")

    if config["delivery"]["mode"] == "maildir":
        maildir = Path(config["delivery"]["maildir"])
        if maildir.is_dir():
            click.echo(f"maildir {maildir}: present")
        else:
            try:
                maildir.mkdir(parents=True)
            except OSError as exc:
                fail(f"cannot create maildir {maildir}: {exc.strerror or exc}")
            click.echo(f"maildir {maildir}: created")

    submission = config["submission"]
    if submission["listen"]:
        from relay.tls import ensure_self_signed

        made = ensure_self_signed(submission["tls_cert"], submission["tls_key"],
                                  config["server"]["hostname"])
        state = "created (self-signed, for local use)" if made else "present"
        click.echo(f"TLS certificate {submission['tls_cert']}: {state}")

    dkim = _dkim_module()
    if dkim is not None and hasattr(dkim, "ensure_key"):
        created = dkim.ensure_key(config)
        key = config["dkim"]["key"]
        if isinstance(created, bool):
            click.echo(f"DKIM key {key}: {'created' if created else 'present'}")
        elif created is not None:
            click.echo(f"DKIM key: {created}")


def register(group: click.Group) -> None:
    group.add_command(init_command)
