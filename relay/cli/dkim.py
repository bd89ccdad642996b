"""`relay dkim keygen` and `relay dkim dns`: the signing keys and the records to publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from relay.cli.common import config_option, emit, fail, json_option
from relay.config import Config
from relay.dkim import (
    generate_ed25519_pem,
    generate_rsa_pem,
    key_paths,
    load_private_key,
    public_key_value,
    txt_strings,
    write_private_key,
)


@click.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys and the DNS records to publish."""


def _write(path: Path, pem: bytes, force: bool) -> str:
    existed = path.exists()
    if existed and not force:
        fail(f"DKIM key {path} exists: use --force to replace it")
    try:
        write_private_key(path, pem, overwrite=force)
    except FileExistsError:
        fail(f"DKIM key {path} exists: use --force to replace it")
    except OSError as exc:
        fail(f"cannot write DKIM key {path}: {exc.strerror or exc}")
    return "replaced" if existed else "created"


@dkim_group.command("keygen")
@config_option
@click.option("--ed25519", "ed25519", is_flag=True,
              help="Write the Ed25519 key (RFC 8463), used next to the RSA key; the RSA "
                   "key is created too if it is missing.")
@click.option("--force", is_flag=True, help="Replace an existing key.")
def keygen_command(config: Config, ed25519: bool, force: bool) -> None:
    """Write a new signing key (RSA-2048 unless --ed25519), mode 0600."""
    rsa_path, ed_path = key_paths(config)
    selector = config["dkim"]["selector"]
    if ed25519:
        if not rsa_path.exists():  # Ed25519 only ever signs alongside RSA
            click.echo(f"DKIM key {rsa_path}: {_write(rsa_path, generate_rsa_pem(), False)} "
                       f"(RSA-2048, selector {selector})")
        path, kind, selector = ed_path, "Ed25519", f"{selector}-ed25519"
        what = _write(ed_path, generate_ed25519_pem(), force)
    else:
        path, kind = rsa_path, "RSA-2048"
        what = _write(rsa_path, generate_rsa_pem(), force)
    click.echo(f"DKIM key {path}: {what} ({kind}, selector {selector})")
    if what == "replaced":
        click.echo("warning: the published record no longer matches; until the new one is "
                   "in DNS, signatures with this selector fail (a new selector avoids the gap)",
                   err=True)
    click.echo("publish the record printed by `relay dkim dns`, then restart `relay serve`")


def _records(config: Config) -> dict[str, Any]:
    domain = config.alias_domain
    hostname = config["server"]["hostname"]
    selector = config["dkim"]["selector"]
    rsa_path, ed_path = key_paths(config)
    if not rsa_path.exists():
        fail(f"no DKIM key at {rsa_path}: run `relay init` or `relay dkim keygen`")
    keys = [(selector, "rsa-sha256", rsa_path)]
    if ed_path.exists():
        keys.append((f"{selector}-ed25519", "ed25519-sha256", ed_path))
    dkim_records = []
    for name, algorithm, path in keys:
        value = public_key_value(load_private_key(path))
        dkim_records.append({
            "name": f"{name}._domainkey.{domain}", "type": "TXT", "selector": name,
            "algorithm": algorithm, "value": value, "strings": txt_strings(value)})
    # the envelope sender of forwarded mail is on the alias domain; the relay's host
    # (or the next-hop MTA that really sends to the internet) must be allowed by SPF
    spf = "v=spf1 a -all" if hostname == domain else f"v=spf1 a:{hostname} -all"
    suggested = [
        {"name": domain, "type": "TXT", "value": spf,
         "purpose": "SPF for the envelope-sender domain: list the host(s) that send "
                    "the relay's mail to the internet"},
        {"name": f"_dmarc.{domain}", "type": "TXT",
         "value": "v=DMARC1; p=reject; adkim=s; aspf=r",
         "purpose": "DMARC for the alias domain: strict DKIM alignment; start with "
                    "p=none and a rua= address while checking reports"},
    ]
    if hostname != domain:
        suggested.insert(1, {"name": hostname, "type": "TXT", "value": "v=spf1 a -all",
                             "purpose": "SPF for the relay's HELO name"})
    return {"domain": domain, "dkim": dkim_records, "suggested": suggested}


def _zone_line(name: str, strings: list[str]) -> str:
    quoted = [f'"{s}"' for s in strings]
    if len(quoted) == 1:
        return f"{name}. IN TXT {quoted[0]}"
    return f"{name}. IN TXT ( " + "\n\t".join(quoted) + " )"


def _print_records(data: dict[str, Any]) -> None:
    click.echo(f"; DKIM public keys of {data['domain']}: publish these (zone-file syntax)")
    for record in data["dkim"]:
        click.echo(f"; {record['algorithm']}, selector {record['selector']}")
        click.echo(_zone_line(record["name"], record["strings"]))
    click.echo("")
    click.echo("; Suggestions, not derived from the keys: adjust them to your set-up")
    for record in data["suggested"]:
        click.echo(f"; {record['purpose']}")
        click.echo(_zone_line(record["name"], txt_strings(record["value"])))


@dkim_group.command("dns")
@config_option
@json_option
def dns_command(config: Config, as_json: bool) -> None:
    """Print the DKIM TXT records to publish, with suggested SPF and DMARC records."""
    emit(_records(config), as_json, _print_records)


def register(group: click.Group) -> None:
    group.add_command(dkim_group)
