"""``broker outbox``: run the delivery worker, list dead messages."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from ..config import BrokerConfig

# Same option as broker.cli's (defined alike: broker.cli imports this module at its end).
CONFIG_OPTION = click.option(
    "--config", "config_path", envvar="BROKER_CONFIG", default="broker.toml", show_default=True,
    help="TOML configuration file (env BROKER_CONFIG).",
)


def _load(config_path: str) -> BrokerConfig:
    from ..cli import _load as load_or_exit

    return load_or_exit(config_path)


@click.group("outbox")
def outbox_group() -> None:
    """Email and SMS delivery."""


@outbox_group.command("worker")
@CONFIG_OPTION
@click.option("--poll-seconds", default=1.0, show_default=True, help="Wait when nothing is due.")
@click.option("--batch-size", default=10, show_default=True)
def worker_command(config_path: str, poll_seconds: float, batch_size: int) -> None:
    """Deliver the outbox until SIGTERM or SIGINT; run one or more next to the broker."""
    from .. import db
    from .worker import WorkerSettings, default_worker_id, run_forever

    config = _load(config_path)
    engine = db.make_engine(config.database_url)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        click.echo(f"signal {signum}: finishing the current message, then stopping", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker_id = default_worker_id("cli")
    click.echo(f"outbox worker {worker_id} started", err=True)
    settings = WorkerSettings(batch_size=batch_size, poll_seconds=poll_seconds)
    run_forever((db.make_sessionmaker(engine), config), worker_id, stop, settings=settings)
    engine.dispose()
    click.echo("outbox worker stopped", err=True)


@outbox_group.command("dead")
@CONFIG_OPTION
@click.option("--tenant", "tenants", multiple=True, help="Only these tenants (default: all).")
def dead_command(config_path: str, tenants: tuple[str, ...]) -> None:
    """List messages that will not be delivered (no message bodies: they hold codes)."""
    from .. import db
    from .outbox import dead_messages

    config = _load(config_path)
    engine = db.make_engine(config.database_url)
    sessions = db.make_sessionmaker(engine)
    count = 0
    with sessions() as session:
        for slug in tenants or tuple(config.tenants):
            for message in dead_messages(session, slug):
                count += 1
                click.echo(
                    f"{message.id}\t{slug}\t{message.channel}\t{message.recipient}\t"
                    f"{message.created_at:%Y-%m-%d %H:%M}\tattempts={message.attempts}\t"
                    f"{message.last_error or ''}"
                )
    engine.dispose()
    click.echo(f"{count} dead message(s)", err=True)
