"""`relay policy check`: the whole chain on a file, without sending anything."""

from __future__ import annotations

import json
from pathlib import Path

import click

from relay.cli.common import config_option, json_option, open_store
from relay.config import Config


def register(group: click.Group) -> None:
    @group.group()
    def policy() -> None:
        """Try the policy chain."""

    @policy.command("check")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--from", "mail_from", required=True, help="Envelope sender.")
    @click.option("--to", "rcpt", required=True, help="The alias written to.")
    @config_option
    @json_option
    def check(file: Path, mail_from: str, rcpt: str, config: Config, as_json: bool) -> None:
        """Run the chain on FILE.eml as if --from sent it to --to; print every finding."""
        from relay.app import build_pipeline

        store = open_store(config)
        decision = build_pipeline(config, store).check(mail_from, rcpt, file.read_bytes())
        result = {
            "decision": decision.action.value,
            "reply": decision.smtp_reply(),
            "policy": decision.decisive.policy if decision.decisive else None,
            "rule_ids": list(decision.rule_ids),
            "findings": [f.as_dict() for f in decision.findings],
        }
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            for f in result["findings"]:
                extra = f" [{', '.join(f['rule_ids'])}]" if f.get("rule_ids") else ""
                click.echo(f"{f['policy']:<18} {f['result']:<8} {f.get('reason', '')}{extra}")
            click.echo(f"decision: {result['decision']}: {result['reply']}")
