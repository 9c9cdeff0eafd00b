"""The ``broker`` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .config import ConfigError, load_config

CONFIG_OPTION = click.option(
    "--config", "config_path", envvar="BROKER_CONFIG", default="broker.toml", show_default=True,
    help="TOML configuration file (env BROKER_CONFIG).",
)


@click.group()
def main() -> None:
    """Identity and onboarding broker for utility self-service portals."""


@main.command("check-config")
@CONFIG_OPTION
def check_config(config_path: str) -> None:
    """Validate the configuration file and say what it declares."""
    try:
        config = load_config(config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    click.echo(f"{config_path}: ok, {len(config.tenants)} tenant(s): {', '.join(config.tenants)}")


@main.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@CONFIG_OPTION
def db_upgrade(config_path: str) -> None:
    """Migrate the database to the newest schema."""
    from . import db

    config = _load(config_path)
    db.upgrade(config.database_url)
    click.echo("database at head")


@main.command("serve")
@CONFIG_OPTION
@click.option("--bind", default="127.0.0.1:5000", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="worker processes  [default: 2; with --pin-workers, one per CPU]")
@click.option("--threads", default=4, show_default=True, help="threads per worker (gthread)")
@click.option("--pin-workers", is_flag=True,
              help="run each worker on a CPU of its own (Linux; docs/DEPLOYMENT.md)")
def serve(config_path: str, bind: str, workers: int | None, threads: int,
          pin_workers: bool) -> None:
    """Run the broker under gunicorn (production)."""
    from gunicorn.app.base import BaseApplication

    from .app import create_app

    if pin_workers:
        if not hasattr(os, "sched_setaffinity"):
            raise click.UsageError("--pin-workers needs Linux (sched_setaffinity)")
        from .worker_cpus import usable_cpus

        cpus = usable_cpus()
        if workers is None:
            workers = cpus
        elif workers < cpus:
            click.echo(f"note: {workers} pinned worker(s) leave {cpus - workers} of {cpus} "
                       "CPUs unused", err=True)
    workers = workers or 2
    config = _load(config_path)
    from .serve_checks import refusals, warnings

    refused = refusals(config)
    for problem in refused:
        click.echo(f"broker serve: refused: {problem}", err=True)
    if refused:
        sys.exit(2)
    for problem in warnings(config):
        click.echo(f"broker serve: warning: {problem}", err=True)

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            if pin_workers:
                from .worker_cpus import pick_cpu_before_fork, pin_after_fork

                self.cfg.set("pre_fork", pick_cpu_before_fork)
                self.cfg.set("post_fork", pin_after_fork)

        def load(self):  # type: ignore[no-untyped-def]
            return create_app(config)

    _Gunicorn().run()


@main.command("demo")
@click.option("--data-dir", default=".demo", show_default=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
def demo(data_dir: Path, host: str) -> None:
    """Start the broker, demo portals, upstream emulator and dev outbox on SQLite."""
    from .devserver import run_demo

    run_demo(data_dir, host)


@main.group("keys")
def keys_group() -> None:
    """Token signing keys."""


@keys_group.command("rotate")
@CONFIG_OPTION
@click.option("--tenant", "tenants", multiple=True, help="Tenant slug (default: every tenant).")
@click.option("--alg", type=click.Choice(["RS256", "ES256"]), default=None,
              help="Algorithm of the new key (default: the tenant's signing_alg).")
def keys_rotate(config_path: str, tenants: tuple[str, ...], alg: str | None) -> None:
    """Make a new signing key: published now, signing six minutes later (portals cache the
    JWKS); old keys stay published until their tokens expire."""
    from . import db
    from .oidc.keys import rotate, signs_from

    config = _load(config_path)
    unknown = [slug for slug in tenants if slug not in config.tenants]
    if unknown:
        click.echo(f"unknown tenant(s): {', '.join(unknown)}", err=True)
        sys.exit(2)
    sessions = db.make_sessionmaker(db.make_engine(config.database_url))
    for slug in tenants or tuple(config.tenants):
        with db.transaction(sessions) as session:
            key = rotate(session, config.tenants[slug], alg)
            click.echo(f"{slug}: new {key.alg} key {key.kid}, published now, signs from "
                       f"{signs_from(key):%Y-%m-%d %H:%M} UTC")


def _load(config_path: str):  # type: ignore[no-untyped-def]
    try:
        return load_config(config_path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(2)


from .customers.cli import customers as _customers_group  # noqa: E402

main.add_command(_customers_group)

from .messaging.cli import outbox_group as _outbox_group  # noqa: E402

main.add_command(_outbox_group)

from .staff.cli import staff_group as _staff_group  # noqa: E402

main.add_command(_staff_group)

from .retention import purge_command as _purge_command  # noqa: E402

main.add_command(_purge_command)
