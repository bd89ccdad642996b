"""`relay serve`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import ipaddress

import click

from relay.cli.common import config_option, fail
from relay.config import Config, ConfigError
from relay.logs import configure, get_logger


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(group: click.Group) -> None:
    @group.command()
    @config_option
    def serve(config: Config) -> None:
        """Run the relay daemon until SIGTERM/SIGINT (clean shutdown)."""
        from relay.server import RelayServer

        configure(config["log"]["format"])
        log = get_logger()
        if not _loopback(config.listen.host) and config["dkim"]["verify_inbound"] != "require":
            log.warning("config.insecure", detail="listening beyond loopback without "
                        "[dkim] verify_inbound = \"require\": sender addresses can be forged")
        try:
            server = RelayServer(config)
            asyncio.run(server.serve_until_signalled())
        except ConfigError as exc:
            fail(f"config: {exc}")
        except OSError as exc:
            fail(f"cannot listen on {config.listen}: {exc.strerror}")
