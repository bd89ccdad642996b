"""Sellers, their Messaging Permissions (authorized senders), buyers and opt-outs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from aliasdb.models import Seller
from aliasdb.store import Store
from relay.cli.common import (
    ADDRESS,
    BUYER_ID,
    SELLER_ID,
    config_option,
    emit,
    fail,
    fmt,
    json_option,
    lines,
    listing,
    open_store,
    table,
)
from relay.config import Config

ON_OFF = click.Choice(["on", "off"], case_sensitive=False)
FULFILMENT = click.Choice(["seller", "marketplace"], case_sensitive=False)


def _status(seller: Seller) -> str:
    if seller.suspended_at is None:
        return "active"
    return f"suspended since {seller.suspended_at.isoformat()}"


def seller_data(store: Store, config: Config, seller: Seller) -> dict[str, Any]:
    window = config["policy"]["strike_window_days"]
    since = datetime.now(UTC) - timedelta(days=window)
    strikes = store.strikes(seller.id)
    return {
        "id": seller.id,
        "name": seller.name,
        "inbox": seller.inbox,
        "buyer_messages": seller.buyer_messages,
        "fulfilment": seller.fulfilment,
        "status": "suspended" if seller.suspended else "active",
        "suspended_at": seller.suspended_at,
        "senders": store.senders(seller.id),
        "strikes": strikes,
        "strike_count": len(strikes),
        # what the suspension threshold sees: inside the window, after any reinstatement
        "strikes_in_window": store.count_strikes(seller.id, since),
        "strike_window_days": window,
        "strikes_to_suspend": config["policy"]["strikes_to_suspend"],
    }


def _show_seller(data: dict[str, Any]) -> None:
    lines([
        ("seller", data["id"]),
        ("name", data["name"]),
        ("inbox", data["inbox"]),
        ("buyer messages", data["buyer_messages"]),
        ("fulfilment", data["fulfilment"]),
        ("status", "active" if data["suspended_at"] is None
         else f"suspended since {data['suspended_at'].isoformat()}"),
        ("strikes", f"{data['strike_count']} total, {data['strikes_in_window']} in the last "
                    f"{data['strike_window_days']} days (suspension at "
                    f"{data['strikes_to_suspend']})"),
    ])
    listing("senders", [f"{s['address']}  {s['status']}" for s in data["senders"]])
    listing("strike list", [f"{s['ts']}  {fmt(s['message_id'])}  {s['reason']}"
                            for s in data["strikes"]])


# -- seller ------------------------------------------------------------------------------


@click.group("seller")
def seller_group() -> None:
    """Sellers: settings, status and strikes."""


@seller_group.command("add")
@click.argument("seller_id", type=SELLER_ID)
@click.option("--name", required=True, help="Display name buyers see.")
@click.option("--inbox", type=ADDRESS, help="Where buyer messages are delivered.")
@config_option
def seller_add(config: Config, seller_id: str, name: str, inbox: str | None) -> None:
    """Add a seller."""
    name = _check_name(name)
    store = open_store(config)
    if store.find_seller(seller_id) is not None:
        fail(f"seller {seller_id} exists already")
    store.add_seller(seller_id, name, inbox)
    click.echo(f"seller {seller_id} added")


def _check_name(name: str) -> str:
    clean = name.strip()
    if not clean or len(clean) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in clean):
        fail(f"invalid name {name!r}: 1-200 printable characters")
    return clean


@seller_group.command("set")
@click.argument("seller_id", type=SELLER_ID)
@click.option("--inbox", type=ADDRESS, help="Where buyer messages are delivered.")
@click.option("--buyer-messages", type=ON_OFF, help="Forward buyers' messages to the inbox.")
@click.option("--name", help="Display name buyers see.")
@click.option("--fulfilment", type=FULFILMENT, help="Who ships the seller's orders.")
@config_option
def seller_set(config: Config, seller_id: str, inbox: str | None, buyer_messages: str | None,
               name: str | None, fulfilment: str | None) -> None:
    """Change a seller's settings."""
    if inbox is None and buyer_messages is None and name is None and fulfilment is None:
        fail("nothing to change: give --inbox, --buyer-messages, --name or --fulfilment")
    if name is not None:
        name = _check_name(name)
    store = open_store(config)
    seller = store.seller(seller_id)
    turn_on = None if buyer_messages is None else buyer_messages.lower() == "on"
    if turn_on and (inbox or seller.inbox) is None:
        # buyer messages with nowhere to go would be refused at every reply
        fail(f"seller {seller_id} has no inbox: give --inbox to turn buyer messages on")
    store.update_seller(seller_id, name=name, inbox=inbox, buyer_messages=turn_on,
                        fulfilment=fulfilment.lower() if fulfilment else None)
    click.echo(f"seller {seller_id} updated")


@seller_group.command("show")
@click.argument("seller_id", type=SELLER_ID)
@json_option
@config_option
def seller_show(config: Config, seller_id: str, as_json: bool) -> None:
    """A seller's settings, senders, strikes and status."""
    store = open_store(config)
    emit(seller_data(store, config, store.seller(seller_id)), as_json, _show_seller)


@seller_group.command("suspend")
@click.argument("seller_id", type=SELLER_ID)
@config_option
def seller_suspend(config: Config, seller_id: str) -> None:
    """Stop a seller's messaging until reinstated."""
    store = open_store(config)
    was = store.seller(seller_id)
    seller = store.suspend_seller(seller_id)
    prefix = "already " if was.suspended else ""
    click.echo(f"seller {seller_id} {prefix}{_status(seller)}")


@seller_group.command("reinstate")
@click.argument("seller_id", type=SELLER_ID)
@config_option
def seller_reinstate(config: Config, seller_id: str) -> None:
    """Lift a suspension; earlier strikes stop counting towards the next one."""
    store = open_store(config)
    was = store.seller(seller_id)
    store.reinstate_seller(seller_id)
    click.echo(f"seller {seller_id} reinstated" if was.suspended
               else f"seller {seller_id} was active; earlier strikes no longer count")


# -- sender (Messaging Permissions) ------------------------------------------------------


@click.group("sender")
def sender_group() -> None:
    """Messaging Permissions: the addresses a seller may write from."""


def _set_sender(config: Config, seller_id: str, address: str, status: str) -> None:
    store = open_store(config)
    store.seller(seller_id)
    store.set_sender(seller_id, address, status)
    click.echo(f"sender {address} {status} for seller {seller_id}")


@sender_group.command("enable")
@click.argument("seller_id", type=SELLER_ID)
@click.argument("address", type=ADDRESS)
@config_option
def sender_enable(config: Config, seller_id: str, address: str) -> None:
    """Authorize ADDRESS to write to buyers for the seller."""
    _set_sender(config, seller_id, address, "enabled")


@sender_group.command("block")
@click.argument("seller_id", type=SELLER_ID)
@click.argument("address", type=ADDRESS)
@config_option
def sender_block(config: Config, seller_id: str, address: str) -> None:
    """Refuse mail from ADDRESS for the seller."""
    _set_sender(config, seller_id, address, "blocked")


@sender_group.command("list")
@click.argument("seller_id", type=SELLER_ID)
@json_option
@config_option
def sender_list(config: Config, seller_id: str, as_json: bool) -> None:
    """The seller's sender addresses and their status."""
    store = open_store(config)
    emit(store.senders(seller_id), as_json, lambda rows: table(
        [(r["address"], r["status"], r["updated_at"]) for r in rows],
        ("address", "status", "updated")))


# -- buyer and opt-out -------------------------------------------------------------------


@click.group("buyer")
def buyer_group() -> None:
    """Buyers."""


@buyer_group.command("add")
@click.argument("buyer_id", type=BUYER_ID)
@click.argument("address", type=ADDRESS)
@click.option("--name", help="Display name sellers see.")
@config_option
def buyer_add(config: Config, buyer_id: str, address: str, name: str | None) -> None:
    """Add a buyer with their real address."""
    if name is not None:
        name = _check_name(name)
    store = open_store(config)
    if store.find_buyer(buyer_id) is not None:
        fail(f"buyer {buyer_id} exists already")
    store.add_buyer(buyer_id, address, name)
    click.echo(f"buyer {buyer_id} added")


@click.group("optout")
def optout_group() -> None:
    """A buyer's opt-out of sellers' messages ([Important] still passes)."""


def _optout(config: Config, buyer_id: str, opted_out: bool) -> None:
    store = open_store(config)
    state = "opted out" if opted_out else "opted in"
    if store.buyer(buyer_id).opted_out == opted_out:
        # keep the original opt-out time rather than restarting it
        click.echo(f"buyer {buyer_id} already {state}")
        return
    store.set_optout(buyer_id, opted_out)
    click.echo(f"buyer {buyer_id} {state}")


@optout_group.command("set")
@click.argument("buyer_id", type=BUYER_ID)
@config_option
def optout_set(config: Config, buyer_id: str) -> None:
    """Opt the buyer out of sellers' messages."""
    _optout(config, buyer_id, True)


@optout_group.command("clear")
@click.argument("buyer_id", type=BUYER_ID)
@config_option
def optout_clear(config: Config, buyer_id: str) -> None:
    """Let sellers' messages reach the buyer again."""
    _optout(config, buyer_id, False)


def register(group: click.Group) -> None:
    for command in (seller_group, sender_group, buyer_group, optout_group):
        group.add_command(command)
