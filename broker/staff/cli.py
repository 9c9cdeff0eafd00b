"""``broker staff create``: the first administrator (and any later staff) from the command line.

The TOTP provisioning URI is printed once; the password is asked for (or generated and
printed once), never stored in plain text.
"""

from __future__ import annotations

import sys

import click

from broker.config import ConfigError, load_config
from policies.staff import ALL_TENANTS, ROLES


@click.group("staff")
def staff_group() -> None:
    """Support staff accounts."""


@staff_group.command("create")
@click.option("--email", required=True)
@click.option("--name", default="", help="Name shown in the console and the audit log.")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES))
@click.option("--tenant", "tenants", multiple=True, required=True,
              help=f"Tenant slug the staff member may act on (repeat); {ALL_TENANTS!r} for all.")
@click.option("--password", envvar="BROKER_STAFF_PASSWORD", default=None,
              help="First password (env BROKER_STAFF_PASSWORD); generated and shown once if "
                   "left out.")
@click.option("--config", "config_path", envvar="BROKER_CONFIG", default="broker.toml",
              show_default=True, help="TOML configuration file (env BROKER_CONFIG).")
def create_command(
    email: str, name: str, roles: tuple[str, ...], tenants: tuple[str, ...],
    password: str | None, config_path: str,
) -> None:
    """Create a staff member and print the authenticator (TOTP) setup URI once."""
    from broker import audit, db
    from broker.staff.auth import create_staff, staff_by_email

    try:
        config = load_config(config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    unknown = [t for t in tenants if t != ALL_TENANTS and t not in config.tenants]
    if unknown:
        click.echo(f"unknown tenant(s) {', '.join(unknown)}; known: {', '.join(config.tenants)}",
                   err=True)
        sys.exit(2)
    if "@" not in email:
        click.echo(f"{email!r} is not an email address", err=True)
        sys.exit(2)
    engine = db.make_engine(config.database_url)
    try:
        with db.transaction(db.make_sessionmaker(engine)) as session:
            if staff_by_email(session, email) is not None:
                click.echo(f"a staff member with email {email} exists", err=True)
                sys.exit(1)
            created = create_staff(
                session, email=email, name=name, roles=list(roles), tenants=list(tenants),
                password=password,
            )
            audit.record(
                session, "staff_created", tenant=tenants[0] if len(tenants) == 1 else None,
                actor_type="system", actor_id="cli", reason="broker staff create",
                staff_id=created.staff.id, roles=list(roles), tenants=list(tenants),
            )
    finally:
        engine.dispose()
    click.echo(f"staff member {created.staff.email} created (id {created.staff.id})")
    if password is None:
        click.echo(f"first password (shown once): {created.password}")
    click.echo("add this to an authenticator app (shown once):")
    click.echo(created.totp_uri)
