"""``broker serve`` refuses the example's keys and the demo's dev mode, and says out loud what
an unsafe but sometimes meant setting costs (a review found it served them all silently)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner
from gunicorn.app.base import BaseApplication

from broker.cli import main

SAFE = {
    "public_url": '"https://login.example-utility.eu"',
    "secret_key": f'"{secrets.token_urlsafe(32)}"',
    "hmac_key": f'"{secrets.token_urlsafe(32)}"',
}
TENANT = '\n[tenants.example-water]\nname = "Example Water"\ncountry = "DK"\n'
WEBHOOK = '\n[messaging.sms]\nkind = "webhook"\nurl = "https://sms.example-utility.eu/send"\n'


def serve(tmp_path: Path, monkeypatch, extra: str = "", sms: str = WEBHOOK,
          **settings: str):  # type: ignore[no-untyped-def]
    """Run ``broker serve`` with the settings; gunicorn is not started, only noted."""
    started: list[bool] = []
    monkeypatch.setattr(BaseApplication, "run", lambda self: started.append(True))
    values = {**SAFE, "database_url": f'"sqlite:///{tmp_path / "b.db"}"', **settings}
    config = tmp_path / "broker.toml"
    config.write_text("\n".join(f"{key} = {value}" for key, value in values.items())
                      + f"\n{extra}\n{sms}{TENANT}", encoding="utf-8")
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    return result, bool(started)


def test_a_safe_config_is_served_without_a_word(tmp_path, monkeypatch):
    result, started = serve(tmp_path, monkeypatch)
    assert result.exit_code == 0 and started and "broker serve:" not in result.output


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("secret_key", '"CHANGE-ME-signs-cookies-at-least-32-characters"', "secret_key"),
    ("hmac_key", '"CHANGE-ME-keys-the-HMAC-of-PINs-codes-and-national-ids"', "hmac_key"),
    ("data_keys", '["CHANGE-ME-newest-data-key-at-least-32-characters"]', "data_keys"),
])
def test_the_examples_keys_are_refused(tmp_path, monkeypatch, setting, value, named):
    result, started = serve(tmp_path, monkeypatch, **{setting: value})
    assert result.exit_code == 2 and not started
    assert f"refused: {named} is the example's" in result.output


def test_dev_mode_is_refused(tmp_path, monkeypatch):
    result, started = serve(tmp_path, monkeypatch, dev_mode="true",
                            emulator_url='"http://127.0.0.1:5002"')
    assert result.exit_code == 2 and not started and "dev_mode = true" in result.output


def test_csrf_off_plain_http_and_the_dev_sms_gateway_are_said_out_loud(tmp_path, monkeypatch):
    result, started = serve(tmp_path, monkeypatch, sms="", csrf_protection="false",
                            public_url='"http://login.example-utility.eu"')
    assert result.exit_code == 0 and started
    for named in ("csrf_protection = false", "public_url http://login.example-utility.eu is "
                  "not https", "messaging.sms.kind = 'dev'"):
        assert f"warning: {named}" in result.output


def test_plain_http_on_loopback_is_a_bench_not_a_warning(tmp_path, monkeypatch):
    result, _ = serve(tmp_path, monkeypatch, public_url='"http://127.0.0.1:8000"')
    assert "is not https" not in result.output
