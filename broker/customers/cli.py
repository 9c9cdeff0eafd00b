"""``broker customers ...``: the register from the command line."""

from __future__ import annotations

import sys
import time

import click

from broker.config import ConfigError, load_config


@click.group("customers")
def customers() -> None:
    """The utility's customer register."""


@customers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--tenant", "tenant_slug", required=True, help="Tenant (utility) slug.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="File format; guessed from the extension when left out.")
@click.option("--config", "config_path", envvar="BROKER_CONFIG", default="broker.toml",
              show_default=True, help="TOML configuration file (env BROKER_CONFIG).")
def import_command(file: str, tenant_slug: str, fmt: str | None, config_path: str) -> None:
    """Load FILE (CSV or JSON Lines from the customer system): added, changed, refused."""
    from broker import db
    from broker.customers.importer import ImportFileError, import_file

    try:
        config = load_config(config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    tenant = config.tenant(tenant_slug)
    if tenant is None:
        click.echo(f"unknown tenant {tenant_slug!r}; known: {', '.join(config.tenants)}", err=True)
        sys.exit(2)
    engine = db.make_engine(config.database_url)
    started = time.perf_counter()
    try:
        report = import_file(engine, tenant, config.hmac_key, file, fmt)
    except ImportFileError as error:
        click.echo(f"{file}: {error}", err=True)
        sys.exit(2)
    finally:
        engine.dispose()
    seconds = time.perf_counter() - started
    click.echo(f"{file}: {report.rows} rows in {seconds:.1f} s")
    click.echo(report.summary())
