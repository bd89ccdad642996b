"""structlog set-up: one JSON object per line on stdout (or readable console lines).

Log lines carry ids, never real addresses or bodies; callers pass only those.
"""

from __future__ import annotations

import logging
import sys

import structlog


class _Stdout:
    """Whatever sys.stdout is at write time (tests swap it; the daemon does not)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure(fmt: str = "json", stream=None) -> None:
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(stream or _Stdout()),
        cache_logger_on_first_use=False,
    )
    # aiosmtpd logs every command (addresses included) at INFO/DEBUG; keep only its warnings
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def get_logger(**context):
    return structlog.get_logger("relay").bind(**context)
