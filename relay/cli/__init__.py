"""The `relay` command line (placeholder until the CLI lands)."""

import click


@click.group()
def main() -> None:
    """Anonymizing buyer-seller mail relay."""
