"""`relay serve`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import ipaddress
import os

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
    @click.option("--workers", type=click.IntRange(1, 64), default=None,
                  help="Processes sharing the listeners (SO_REUSEPORT) "
                       "[default: the number of cores].")
    @config_option
    def serve(config: Config, workers: int | None) -> None:
        """Run the relay daemon until SIGTERM/SIGINT (clean shutdown)."""
        from relay.app import build_pipeline_check
        from relay.server import RelayServer

        configure(config["log"]["format"])
        log = get_logger()
        if not _loopback(config.listen.host) and config["dkim"]["verify_inbound"] != "require":
            log.warning("config.insecure", detail="listening beyond loopback without "
                        "[dkim] verify_inbound = \"require\": sender addresses can be forged")
        workers = workers or os.cpu_count() or 1
        try:
            build_pipeline_check(config)  # a bad rule file stops us here, in one line
        except ConfigError as exc:
            fail(f"config: {exc}")

        def serve_one() -> None:
            try:
                server = RelayServer(config, reuse_port=workers > 1)
                asyncio.run(server.serve_until_signalled())
            except OSError as exc:
                fail(f"cannot listen on {config.listen}: {exc.strerror}")

        if workers == 1:
            serve_one()
        else:
            from relay import workers as pool

            raise SystemExit(pool.run(workers, serve_one))
