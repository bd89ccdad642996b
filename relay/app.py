"""Wiring: from a Config to a ready Pipeline (used by the daemon and `relay policy check`)."""

from __future__ import annotations

import tomllib

from aliasdb import Store
from policies import chain
from policies.content_rules import load_rules
from policies.context import Settings
from policies.reasons import ContactReasons
from policies.registry import REGISTRY
from relay import delivery as delivery_backends
from relay.config import Config, ConfigError
from relay.delivery import Delivery
from relay.dkim import DnsResolver, Resolver, Signer
from relay.facts import Facts
from relay.logs import get_logger
from relay.pipeline import Pipeline


def settings_from(config: Config) -> Settings:
    policy = config["policy"]
    try:
        rules = load_rules(policy["content_rules"])
        reasons = ContactReasons.from_dict(
            tomllib.loads(policy["contact_reasons"].read_text()))
    except FileNotFoundError as exc:
        raise ConfigError(f"file not found: {exc.filename}") from None
    except (ValueError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"bad policy data: {exc}") from None
    return Settings(
        alias_domain=config.alias_domain,
        cutoff_days=policy["cutoff_days"],
        strikes_to_suspend=policy["strikes_to_suspend"],
        strike_window_days=policy["strike_window_days"],
        max_attachment_bytes=policy["max_attachment_bytes"],
        content_rules=rules,
        contact_reasons=reasons,
        verify_inbound=config["dkim"]["verify_inbound"],
        customer_service=config["policy"]["customer_service"],
        max_hops=config["limits"]["max_hops"],
    )


def build_pipeline(config: Config, store: Store, delivery: Delivery | None = None,
                   resolver: Resolver | None = None, *, keyholder: bool = False) -> Pipeline:
    """``keyholder``: sign through a keyholder process when the config says so (the
    daemon, which starts it); elsewhere keys are loaded here."""
    try:
        policies = chain.build(config["policy"]["order"], REGISTRY)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = settings_from(config)
    signer = Signer.from_config(config, keyholder=keyholder and config["dkim"]["keyholder"])
    if signer is None:
        get_logger().warning("dkim.unsigned", detail="no DKIM key: forwarded mail is not "
                             "signed; run `relay init` or `relay dkim keygen`")
    if resolver is None and settings.verify_inbound != "off":
        resolver = DnsResolver()
    return Pipeline(store, Facts(store, settings), policies,
                    delivery or delivery_backends.from_config(config), config.alias_domain,
                    signer=signer, resolver=resolver)


def build_pipeline_check(config: Config) -> None:
    """Load everything a worker will need, so a bad file fails before any fork."""
    try:
        chain.build(config["policy"]["order"], REGISTRY)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings_from(config)
    Signer.from_config(config)
