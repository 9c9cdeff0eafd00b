"""Sealing (broker/crypto.py): what is sealed opens only for its purpose, untouched, under a
configured key; keys rotate without stranding what the old key sealed."""

from __future__ import annotations

import base64

import pytest

from broker import crypto
from broker.config import ConfigError

from .conftest import make_config

OLD_SECRET = "old-data-key-0123456789abcdefghijklmnop"
NEW_SECRET = "new-data-key-0123456789abcdefghijklmnop"
HMAC_KEY = "test-hmac-key-0123456789abcdefghijklmn"  # make_config's


@pytest.fixture
def restore_installed_keys():
    """Tests that parse configs with other keys give the process its keys back."""
    try:
        before: crypto.DataKeys | None = crypto.installed()
    except RuntimeError:  # this test runs first in its process
        before = None
    yield
    if before is not None:
        crypto.install(before)


def _tamper(token: str) -> str:
    version, kid, body = token.split(":")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 0x01
    return f"{version}:{kid}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def test_a_sealed_value_opens_to_what_was_sealed_and_does_not_show_it():
    keys = crypto.DataKeys([NEW_SECRET])
    token = keys.seal("JBSWY3DPEHPK3PXP", purpose="users.totp_secret")
    assert token.startswith(f"v1:{keys.sealing.kid}:")
    assert "JBSWY3DPEHPK3PXP" not in token
    assert keys.open(token, purpose="users.totp_secret") == "JBSWY3DPEHPK3PXP"


def test_sealing_twice_gives_two_different_values():
    keys = crypto.DataKeys([NEW_SECRET])
    first = keys.seal("482913", purpose="outbox.body_text")
    assert first != keys.seal("482913", purpose="outbox.body_text")


def test_a_value_sealed_for_one_place_does_not_open_in_another():
    keys = crypto.DataKeys([NEW_SECRET])
    token = keys.seal("JBSWY3DPEHPK3PXP", purpose="staff.totp_secret")
    with pytest.raises(crypto.SealError):
        keys.open(token, purpose="outbox.body_text")


def test_an_altered_value_is_refused():
    keys = crypto.DataKeys([NEW_SECRET])
    token = keys.seal("482913", purpose="outbox.body_text")
    with pytest.raises(crypto.SealError):
        keys.open(_tamper(token), purpose="outbox.body_text")
    with pytest.raises(crypto.SealError):
        keys.open(token[:-4], purpose="outbox.body_text")


@pytest.mark.parametrize("stored", ["482913", "", "v1:", "v1:abcdef12:", "v2:x:y", "v1:x:!!!"])
def test_something_that_was_never_sealed_is_refused(stored):
    with pytest.raises(crypto.SealError):
        crypto.DataKeys([NEW_SECRET]).open(stored, purpose="outbox.body_text")


def test_after_rotation_the_new_key_seals_and_the_old_key_still_opens():
    before = crypto.DataKeys([OLD_SECRET])
    after = crypto.DataKeys([NEW_SECRET, OLD_SECRET])
    sealed_before = before.seal("old secret", purpose="p")

    sealed_after = after.seal("new secret", purpose="p")

    assert after.open(sealed_before, purpose="p") == "old secret"
    assert sealed_after.split(":")[1] == crypto.data_key(NEW_SECRET).kid != before.sealing.kid
    with pytest.raises(crypto.SealError, match="not configured"):
        before.open(sealed_after, purpose="p")


def test_a_key_dropped_from_the_list_no_longer_opens():
    sealed = crypto.DataKeys([OLD_SECRET]).seal("old secret", purpose="p")
    with pytest.raises(crypto.SealError):
        crypto.DataKeys([NEW_SECRET]).open(sealed, purpose="p")


def test_without_data_keys_the_config_seals_with_a_key_derived_from_the_hmac_key(
    restore_installed_keys,
):
    config = make_config("sqlite://")
    assert config.data_key_secrets == [HMAC_KEY]
    token = crypto.seal("482913", purpose="p")
    assert token.split(":")[1] == crypto.data_key(HMAC_KEY).kid
    # The derived key is not the hmac_key itself: HKDF with its own purpose.
    assert crypto.open_sealed(token, purpose="p") == "482913"


def test_moving_to_data_keys_keeps_what_the_derived_key_sealed_readable(restore_installed_keys):
    make_config("sqlite://")
    sealed_before = crypto.seal("JBSWY3DPEHPK3PXP", purpose="users.totp_secret")

    config = make_config("sqlite://", data_keys=[NEW_SECRET, HMAC_KEY])

    keys = crypto.DataKeys(config.data_key_secrets)
    assert keys.open(sealed_before, purpose="users.totp_secret") == "JBSWY3DPEHPK3PXP"
    assert crypto.seal("x", purpose="p").split(":")[1] == crypto.data_key(NEW_SECRET).kid


def test_the_config_refuses_a_short_data_key():
    with pytest.raises(ConfigError, match="data_keys"):
        make_config("sqlite://", data_keys=["too-short"])
