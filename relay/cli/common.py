"""Pieces every `relay` command shares: --config, --json, the store, one-line errors.

Expected problems (bad input, unknown ids, a missing database) end the command with one
line ``Error: ...`` on stderr and a non-zero exit, never with a traceback.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from aliasdb.dialects import redact
from aliasdb.store import Conflict, NotFound, Store, database_target
from relay.addresses import BadAddress, normalize
from relay.cli.validate import BadInput, check_id, parse_when
from relay.config import Config, ConfigError, load

F = TypeVar("F", bound=Callable[..., Any])

NOT_INITIALIZED = "database not initialized: run `relay init`"
# click >= 8.2 signals "group called without a command" as a usage error that shows help
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class CliError(click.ClickException):
    """One line on stderr, exit status 1."""

    def __init__(self, message: str) -> None:
        # a message from a library may carry newlines; the contract is one line
        super().__init__(" ".join(str(message).split()))


class CliUsageError(CliError):
    """A usage error (missing or malformed argument) shown as one line, exit status 2."""

    exit_code = 2


def fail(message: str) -> NoReturn:
    """End the command with one error line on stderr and exit status 1."""
    raise CliError(message)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn expected exceptions into one-line errors.

    click prints usage errors as usage + hint + message over several lines; the CLI
    contract is a single line, so they are re-raised with the command path folded in.
    """
    try:
        yield
    except _NO_ARGS_IS_HELP:
        raise  # `relay seller` alone shows the help, as usual
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        raise CliUsageError(exc.format_message() + where) from None
    except (NotFound, Conflict, BadAddress, BadInput, ConfigError) as exc:
        raise CliError(str(exc)) from None
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise CliError("database is busy: try again") from None
        raise CliError(f"database error: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise CliError(f"database error: {exc}") from None


class RelayGroup(click.Group):
    """The root group: every sub-command runs inside ``one_line_errors``."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with one_line_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


# -- options -----------------------------------------------------------------------------


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> Config:
    try:
        return load(value)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from None


def config_option(f: F) -> F:
    """Add ``--config PATH`` and pass the loaded ``Config`` as the ``config`` keyword."""
    return click.option(
        "--config", "config", metavar="PATH", default=None, callback=_load_config,
        help="Config file [default: $RELAY_CONFIG, else conf/relay.toml].")(f)


def json_option(f: F) -> F:
    """Add ``--json``, passed as the ``as_json`` keyword: print JSON only, on stdout."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON only (on stdout).")(f)


# -- parameter types: checked while parsing, before anything is opened ----------------------


class IdType(click.ParamType):
    """A seller, buyer or order id (1-64 of A-Z a-z 0-9 . _ -)."""

    name = "id"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return check_id(str(value), self.what)
        except BadInput as exc:
            self.fail(str(exc), param, ctx)


class AddressType(click.ParamType):
    """An email address, validated by email-validator (no DNS) and normalized."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return normalize(str(value))
        except BadAddress as exc:
            self.fail(str(exc), param, ctx)


class WhenType(click.ParamType):
    """An ISO 8601 date or time, as an aware UTC datetime."""

    name = "iso8601"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_when(str(value))
        except BadInput as exc:
            self.fail(str(exc), param, ctx)


SELLER_ID = IdType("seller id")
BUYER_ID = IdType("buyer id")
ORDER_ID = IdType("order id")
ADDRESS = AddressType()
WHEN = WhenType()


# -- the store ---------------------------------------------------------------------------


def open_store(config: Config, *, require_init: bool = True) -> Store:
    """The store of ``config`` (``[database] url``, else ``path``); closed when the command ends.

    With ``require_init`` (everything but ``relay init``) a missing database or secret
    is an error, and nothing is created as a side effect: no SQLite file, no schema in an
    empty PostgreSQL database.
    """
    target = database_target(config)
    if (require_init and not config.database_url and str(target) != ":memory:"
            and not Path(target).exists()):
        fail(NOT_INITIALIZED)
    try:
        store = Store.open(target, migrate=False)
    except (sqlite3.Error, OSError) as exc:  # PostgreSQL's errors arrive as sqlite3.Error
        fail(f"cannot open database {redact(target)}: {exc}")
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(store.close)
    if require_init and store.schema_version() == 0:
        fail(NOT_INITIALIZED)
    store.migrate()
    if require_init:
        try:
            store.secret  # noqa: B018 - the secret is written by `relay init`
        except NotFound:
            fail(NOT_INITIALIZED)
    return store


def parse_alias(config: Config, address: str) -> str:
    """The token of ``token@alias_domain`` (domain case-insensitive), else an error."""
    domain = config.alias_domain
    local, at, host = address.strip().rpartition("@")
    if not at or host.lower() != domain.lower() or not local:
        fail(f"{address!r} is not an alias of {domain}")
    token = local.lower()
    if not token.isascii() or not token.isalnum():
        fail(f"{address!r} is not an alias of {domain}: malformed token")
    return token


def alias_address(config: Config, token: str) -> str:
    return f"{token}@{config.alias_domain}"


# -- output ------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=_default)


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (nothing else on stdout), or hand it to ``human``."""
    if as_json:
        click.echo(to_json(data))
    else:
        human(data)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table on stdout; "(none)" when there are no rows."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(h).upper() for h in headers]] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def lines(pairs: Sequence[tuple[str, Any]]) -> None:
    """``key: value`` lines, keys aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {fmt(value)}")


def listing(title: str, items: Sequence[str]) -> None:
    """A titled, indented list for human output, "(none)" when empty."""
    click.echo(f"{title}:")
    for item in items or ["(none)"]:
        click.echo(f"  {item}")
