"""Orders (one at a time; the CSV import is in order_import) and the aliases of a pair."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from aliasdb.models import Order
from aliasdb.store import ORDER_STATUSES
from relay.cli.common import (
    BUYER_ID,
    ORDER_ID,
    SELLER_ID,
    WHEN,
    alias_address,
    config_option,
    emit,
    fail,
    json_option,
    lines,
    open_store,
    parse_alias,
    table,
)
from relay.cli.order_import import import_command
from relay.cli.validate import check_category, order_completion
from relay.config import Config


def order_data(order: Order) -> dict[str, Any]:
    return {"id": order.id, "seller": order.seller_id, "buyer": order.buyer_id,
            "category": order.category, "status": order.status,
            "completed_at": order.completed_at}


@click.group("order")
def order_group() -> None:
    """Orders: what lets a seller write to a buyer."""


@order_group.command("add")
@click.argument("order_id", type=ORDER_ID)
@click.option("--seller", "seller_id", type=SELLER_ID, required=True)
@click.option("--buyer", "buyer_id", type=BUYER_ID, required=True)
@click.option("--category", help="Product category.")
@click.option("--status", type=click.Choice(ORDER_STATUSES), default=None,
              help="[default: pending, or completed with --completed-at]")
@click.option("--completed-at", type=WHEN, default=None,
              help="ISO 8601; only with status completed [default: now].")
@config_option
def order_add(config: Config, order_id: str, seller_id: str, buyer_id: str,
              category: str | None, status: str | None, completed_at: datetime | None) -> None:
    """Add an order, or update it when ORDER_ID exists (same rules as the import)."""
    category = check_category(category)
    store = open_store(config)
    store.seller(seller_id)
    store.buyer(buyer_id)
    existing = store.find_order(order_id)
    status, completed_at = order_completion(status, completed_at, existing, datetime.now(UTC))
    outcome = store.upsert_order(order_id, seller_id, buyer_id, category=category,
                                 status=status, completed_at=completed_at)
    click.echo(f"order {order_id} {outcome}")


@order_group.command("find")
@click.argument("alias")
@json_option
@config_option
def order_find(config: Config, alias: str, as_json: bool) -> None:
    """The orders behind an alias address (Manage Orders search)."""
    token = parse_alias(config, alias)
    store = open_store(config)
    found = store.resolve_alias(token)
    if found is None:
        fail(f"unknown alias {alias_address(config, token)}")
    data = {
        "alias": alias_address(config, token),
        "role": found.role,
        "revoked": found.revoked,
        "seller": found.pair.seller_id,
        "buyer": found.pair.buyer_id,
        "orders": [order_data(o) for o in store.orders_of_pair(found.pair)],
    }

    def human(d: dict[str, Any]) -> None:
        lines([("alias", d["alias"] + (" (revoked)" if d["revoked"] else "")),
               ("stands for", d["role"]), ("seller", d["seller"]), ("buyer", d["buyer"])])
        table([(o["id"], o["status"], o["category"], o["completed_at"]) for o in d["orders"]],
              ("order", "status", "category", "completed"))

    emit(data, as_json, human)


order_group.add_command(import_command)


# -- aliases -----------------------------------------------------------------------------


@click.group("alias")
def alias_group() -> None:
    """The two alias addresses of a seller-buyer pair."""


@alias_group.command("show")
@click.option("--seller", "seller_id", type=SELLER_ID, required=True)
@click.option("--buyer", "buyer_id", type=BUYER_ID, required=True)
@json_option
@config_option
def alias_show(config: Config, seller_id: str, buyer_id: str, as_json: bool) -> None:
    """The pair's live aliases (created on first use, stable afterwards)."""
    store = open_store(config)
    store.seller(seller_id)
    store.buyer(buyer_id)
    tokens = store.aliases(store.pair(seller_id, buyer_id))
    data = {"buyer_alias": alias_address(config, tokens["buyer"]),
            "seller_alias": alias_address(config, tokens["seller"])}
    emit(data, as_json, lambda d: lines([
        ("buyer alias", f"{d['buyer_alias']}  (sellers write here; reaches {buyer_id})"),
        ("seller alias", f"{d['seller_alias']}  (buyers write here; reaches {seller_id})"),
    ]))


@alias_group.command("revoke")
@click.argument("alias")
@config_option
def alias_revoke(config: Config, alias: str) -> None:
    """Revoke an alias: mail to it is refused; the pair gets a new one on next use."""
    token = parse_alias(config, alias)
    address = alias_address(config, token)
    store = open_store(config)
    found = store.resolve_alias(token)
    if found is None:
        fail(f"unknown alias {address}")
    if found.revoked:
        click.echo(f"alias {address} already revoked")
        return
    store.revoke_alias(token)
    click.echo(f"alias {address} revoked")


def register(group: click.Group) -> None:
    group.add_command(order_group)
    group.add_command(alias_group)
