"""Configuration: `conf/relay.toml` over built-in defaults, checked key by key.

Relative paths are resolved against the folder of the config file, so the relay behaves
the same whatever the working directory. An unknown key or a bad value raises
``ConfigError`` with one line that names it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("conf/relay.toml")

DEFAULT_ORDER = [
    "relay_control", "known_alias", "loop", "deliverable", "seller_status",
    "authorized_sender", "buyer_sender", "buyer_messages", "auto_reply", "fulfilment",
    "order_reference", "cutoff", "optout", "content", "attachments",
]

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {
        "listen": "127.0.0.1:2525",
        "hostname": "relay.example",
        "alias_domain": "relay.example",
        "max_message_bytes": 10 * 1024 * 1024 + 512 * 1024,
        "timeout": 300,
    },
    "submission": {
        "listen": "",
        "tls_cert": "../var/tls/cert.pem",
        "tls_key": "../var/tls/key.pem",
        "auth_fail_limit": 5,
        "auth_fail_window": 900,
    },
    "delivery": {
        "mode": "maildir",
        "maildir": "../var/maildir",
        "smarthost": "127.0.0.1:10025",
        "timeout": 60,
    },
    # url (postgresql://...) puts several nodes on one PostgreSQL database; it takes
    # precedence over path (SQLite, one node)
    "database": {"path": "../var/relay.db", "url": ""},
    # keyholder: the daemon's workers never read the private keys; a child process signs
    "dkim": {"selector": "relay", "key": "../var/dkim.key", "verify_inbound": "record",
             "keyholder": True},
    "policy": {
        "order": DEFAULT_ORDER,
        "cutoff_days": 30,
        "strikes_to_suspend": 3,
        "strike_window_days": 30,
        "content_rules": "content_rules.toml",
        "contact_reasons": "contact_reasons.toml",
        "max_attachment_bytes": 10 * 1024 * 1024,
        "customer_service": "",
    },
    "log": {"format": "json"},
    "limits": {
        "max_connections": 200,
        "max_connections_per_ip": 20,
        "max_commands": 500,
        "max_unknown_commands": 10,
        "messages_per_ip_per_minute": 120,
        "max_hops": 30,
        "data_timeout": 240,
    },
}

CHOICES = {
    ("delivery", "mode"): ("maildir", "smtp"),
    ("dkim", "verify_inbound"): ("require", "record", "off"),
    ("log", "format"): ("json", "console"),
}
PATHS = {("delivery", "maildir"), ("database", "path"), ("dkim", "key"),
         ("policy", "content_rules"), ("policy", "contact_reasons"),
         ("submission", "tls_cert"), ("submission", "tls_key")}
POSITIVE = {("submission", "auth_fail_limit"), ("submission", "auth_fail_window"),
            ("server", "max_message_bytes"), ("server", "timeout"), ("delivery", "timeout"),
            ("policy", "cutoff_days"), ("policy", "strikes_to_suspend"),
            ("policy", "strike_window_days"), ("policy", "max_attachment_bytes"),
            *(("limits", key) for key in DEFAULTS["limits"])}


class ConfigError(ValueError):
    """A configuration problem, worded for one line on stderr."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_hostport(value: str, key: str) -> HostPort:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return HostPort(host, int(port))


@dataclass(frozen=True)
class Config:
    path: Path | None
    values: dict[str, dict[str, Any]]

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    @property
    def alias_domain(self) -> str:
        return self.values["server"]["alias_domain"]

    @property
    def listen(self) -> HostPort:
        return parse_hostport(self.values["server"]["listen"], "server.listen")

    @property
    def smarthost(self) -> HostPort:
        return parse_hostport(self.values["delivery"]["smarthost"], "delivery.smarthost")

    @property
    def database_path(self) -> Path:
        return self.values["database"]["path"]

    @property
    def database_url(self) -> str:
        """``[database] url`` (PostgreSQL), or "" when the relay runs on ``path`` (SQLite)."""
        return self.values["database"]["url"]


def config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The file to read: --config, else $RELAY_CONFIG, else conf/relay.toml if present."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("RELAY_CONFIG"):
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load(explicit: str | os.PathLike | None = None,
         overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    path = config_path(explicit)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    # built-in defaults are written relative to conf/, like the shipped file
    base = (path.parent if path is not None else Path.cwd() / "conf").resolve()
    return Config(path, _check(data, base))


def _check(data: dict[str, Any], base: Path) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for section in data:
        if section not in DEFAULTS:
            raise ConfigError(f"unknown config section [{section}]")
        if not isinstance(data[section], dict):
            raise ConfigError(f"[{section}] must be a table")
    for section, defaults in DEFAULTS.items():
        given = data.get(section, {})
        for key in given:
            if key not in defaults:
                raise ConfigError(f"unknown config key {section}.{key}")
        merged[section] = {}
        for key, default in defaults.items():
            value = given.get(key, default)
            name = f"{section}.{key}"
            if type(value) is not type(default):
                raise ConfigError(
                    f"{name}: expected {type(default).__name__}, got {value!r}")
            if (section, key) in CHOICES and value not in CHOICES[section, key]:
                raise ConfigError(
                    f"{name}: must be one of {', '.join(CHOICES[section, key])}, got {value!r}")
            if (section, key) in POSITIVE and value <= 0:
                raise ConfigError(f"{name}: must be positive, got {value!r}")
            if (section, key) in PATHS and value:
                value = (base / value).resolve() if value != ":memory:" else value
            merged[section][key] = value
    parse_hostport(merged["server"]["listen"], "server.listen")
    if merged["submission"]["listen"]:
        parse_hostport(merged["submission"]["listen"], "submission.listen")
    if merged["delivery"]["mode"] == "smtp":
        parse_hostport(merged["delivery"]["smarthost"], "delivery.smarthost")
    domain = merged["server"]["alias_domain"]
    if not domain or "." not in domain or domain != domain.strip().lower():
        raise ConfigError(f"server.alias_domain: expected a lower-case domain, got {domain!r}")
    if not all(isinstance(name, str) for name in merged["policy"]["order"]):
        raise ConfigError("policy.order: expected a list of policy names")
    _check_database_url(merged["database"]["url"])
    _check_limits(merged)
    return merged


def _check_database_url(url: str) -> None:
    if not url:
        return
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres") or not rest:
        shown = f"{scheme}://..." if sep else "a value without a scheme"
        raise ConfigError(f"database.url: expected postgresql://[USER[:PASSWORD]@]HOST[:PORT]"
                          f"/DBNAME (or empty for SQLite at database.path), got {shown}")


def _check_limits(merged: dict[str, dict[str, Any]]) -> None:
    """[limits]: the relations between keys that make the timeouts and caps coherent."""
    limits = merged["limits"]
    if limits["data_timeout"] <= merged["delivery"]["timeout"]:
        raise ConfigError(
            f"limits.data_timeout: must be longer than delivery.timeout "
            f"({merged['delivery']['timeout']}), got {limits['data_timeout']}")
    if limits["data_timeout"] >= 600:
        raise ConfigError(
            f"limits.data_timeout: must be under 600 (RFC 5321 gives a client 10 minutes "
            f"to wait for the answer to DATA), got {limits['data_timeout']}")
    if limits["max_connections_per_ip"] > limits["max_connections"]:
        raise ConfigError(
            f"limits.max_connections_per_ip: must not exceed limits.max_connections "
            f"({limits['max_connections']}), got {limits['max_connections_per_ip']}")
