"""Broker configuration: one TOML file, validated at start-up.

Everything a tenant (utility) decides lives here: its portals (OIDC clients), login methods,
password policy, activation method, lockout rule and binding proofs. The file is parsed into
frozen pydantic models once; requests read the in-memory result and never touch the file again.

A mistake in the file stops start-up with :class:`ConfigError`, whose message names the key
path (``tenants.aaro-vand.password_policy.min_lenght``) and the problem, never a traceback.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from policies.password import PASSWORD_POLICY_PRESETS, PasswordPolicy

from . import crypto

LOCALES = ("da", "nb", "sv", "fi", "es", "en")
Locale = Literal["da", "nb", "sv", "fi", "es", "en"]
UPSTREAM_KINDS = ("mitid", "ftn", "microsoft", "google", "facebook")
MIN_CLIENT_SECRET_LENGTH = 32
TENANT_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class ConfigError(Exception):
    """The configuration file cannot be used; the message says where and why."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1025, ge=1, le=65535)
    security: Literal["plain", "starttls", "tls"] = "plain"
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = Field(10.0, gt=0)


class SmsConfig(_Strict):
    """A generic JSON webhook gateway: POST {to, text, idempotency_key}."""

    kind: Literal["webhook", "dev"] = "dev"
    url: str | None = None
    token: str | None = None
    timeout_seconds: float = Field(5.0, gt=0)
    max_per_number_per_hour: int = Field(5, ge=1)
    max_per_tenant_per_hour: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> SmsConfig:
        if self.kind == "webhook" and not self.url:
            raise ValueError("sms.kind = 'webhook' needs sms.url")
        return self


class MessagingConfig(_Strict):
    smtp: SmtpConfig = SmtpConfig()
    sms: SmsConfig = SmsConfig()
    default_sender: str = "no-reply@broker.invalid"
    max_attempts: int = Field(8, ge=1)
    run_worker_in_process: bool = False


class LockoutConfig(_Strict):
    """N failed attempts lock; the lock is temporary (growing) or until unlocked."""

    max_attempts: int = Field(3, ge=1, le=100)
    lock_minutes: float = Field(15, gt=0)
    growth_factor: float = Field(2.0, ge=1.0)
    max_lock_minutes: float = Field(24 * 60, gt=0)
    until_unlocked: bool = False
    unlock_requires_password_reset: bool = False


def _rate_limits(value: str | None) -> str | None:
    """Refuse a limit string the limits library would not parse, naming the key."""
    if value is None:
        return None
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a rate limit; write e.g. '20/minute' or '5/hour;20/day'"
        ) from None
    return value


class ThrottleLimits(_Strict):
    """Request rates for one kind of form, as limit strings ("20/minute;100/hour").

    ``per_address``: from one source address (an IPv6 /64 counts as one address);
    ``per_target``: at one email, customer number or phone, from anywhere. None turns one off.
    """

    per_address: str | None = None
    per_target: str | None = None

    @field_validator("per_address", "per_target")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return _rate_limits(value)


class ClientThrottleLimits(_Strict):
    """Token, revocation and introspection calls per portal (OIDC client). Off by default:
    these calls are authenticated and cheap (one transaction, one signature), and a limit
    check on each costs more than the rest of a refresh; set one for a portal that misbehaves."""

    per_client: str | None = None

    @field_validator("per_client")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return _rate_limits(value)


class ThrottleConfig(_Strict):
    """Throttles in front of every form where a secret or a target is guessed (docs/LOCKOUT.md).

    Counted in memory per process, or in Redis shared by all processes when ``redis_url`` is set.
    """

    enabled: bool = True
    strategy: Literal["sliding-window-counter", "fixed-window", "moving-window"] = (
        "sliding-window-counter"
    )
    key_prefix: str = Field("broker", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    login: ThrottleLimits = ThrottleLimits()
    registration: ThrottleLimits = ThrottleLimits()
    forgot_password: ThrottleLimits = ThrottleLimits()
    forgot_pin: ThrottleLimits = ThrottleLimits()
    activation: ThrottleLimits = ThrottleLimits()
    totp: ThrottleLimits = ThrottleLimits()
    binding: ThrottleLimits = ThrottleLimits()
    invitation: ThrottleLimits = ThrottleLimits()
    upstream_start: ThrottleLimits = ThrottleLimits()
    oidc: ClientThrottleLimits = ClientThrottleLimits()

    @model_validator(mode="before")
    @classmethod
    def _start_from_defaults(cls, data: Any) -> Any:
        """A section names only what it changes: ``[throttle.login] per_address = ...`` keeps
        the default ``per_target`` (set a limit to "" to turn it off)."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for form, defaults in DEFAULT_THROTTLES.items():
            given = data.get(form, {})
            if isinstance(given, dict):
                section = {**defaults, **given}
                merged[form] = {k: (v or None) for k, v in section.items()}
        return merged


# Per form: (per source address, per target). Targets: the email for login, registration,
# forgot password and activation; the customer number for binding; the phone or email the
# PINs go to for forgot PIN; the invited address for an owner's invitation (mail bombing).
DEFAULT_THROTTLES: dict[str, dict[str, str | None]] = {
    "login": {"per_address": "20/minute", "per_target": "10/minute"},
    "registration": {"per_address": "10/minute", "per_target": "5/hour"},
    "forgot_password": {"per_address": "10/minute", "per_target": "5/hour"},
    "forgot_pin": {"per_address": "10/minute", "per_target": "5/hour"},
    "activation": {"per_address": "20/minute", "per_target": "10/minute"},
    "totp": {"per_address": "20/minute", "per_target": None},
    "binding": {"per_address": "20/minute", "per_target": "10/minute"},
    "invitation": {"per_address": "10/minute", "per_target": "5/hour"},
    "upstream_start": {"per_address": "30/minute", "per_target": None},
}


class RegistryConfig(_Strict):
    """Where a tenant's customers are looked up: the imported SQL register (the default), or
    the utility's live customer system over HTTP (``broker/customers/http_registry.py``)."""

    kind: Literal["sql", "http"] = "sql"
    url: str | None = Field(None, pattern=r"^https?://")
    token: str | None = None
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _http_needs_url(self) -> RegistryConfig:
        if self.kind == "http" and not self.url:
            raise ValueError("registry.kind = 'http' needs registry.url")
        return self

    @model_validator(mode="after")
    def _over_tls(self) -> RegistryConfig:
        """PINs, bill codes and national ids go to this URL, with the token: never in clear
        text, except to a customer system on this very machine (a test's)."""
        if self.url and urlsplit(self.url).scheme != "https" and (
                urlsplit(self.url).hostname not in ("127.0.0.1", "localhost", "::1")):
            raise ValueError("registry.url must be https:// (plain http only on loopback)")
        return self


class BindingConfig(_Strict):
    proofs: list[Literal["pin", "bill_code", "invoice"]] = ["pin"]
    national_id_match: bool = False
    ask_at_signup: bool = False
    pin_valid_days: int = Field(30, ge=1)
    invitation_valid_days: int = Field(7, ge=1)
    registry: RegistryConfig = RegistryConfig()


class RetentionConfig(_Strict):
    """How long data past its use is kept before ``broker purge`` removes it (days).

    Grace periods count from a row's own expiry. The audit log's period is the tenant's
    ``retention_days``. Inactive-account warning and deletion are off at 0.
    """

    unactivated_days: int = Field(30, ge=1)
    verification_grace_days: int = Field(7, ge=0)
    flow_grace_days: int = Field(1, ge=0)
    invitation_grace_days: int = Field(30, ge=0)
    token_grace_days: int = Field(7, ge=0)
    delivered_outbox_days: int = Field(30, ge=1)
    attempt_counter_idle_days: int = Field(30, ge=1)
    inactive_account_warn_days: int = Field(0, ge=0)
    inactive_account_delete_days: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _warn_before_delete(self) -> RetentionConfig:
        warn, delete = self.inactive_account_warn_days, self.inactive_account_delete_days
        if delete and warn and warn >= delete:
            raise ValueError("inactive_account_warn_days must be less than the delete days")
        return self


class UpstreamConfig(_Strict):
    """One upstream identity provider as a tenant uses it."""

    kind: Literal["mitid", "ftn", "microsoft", "google", "facebook"]
    client_id: str
    client_secret: str | None = None
    issuer: str | None = None
    server_metadata_url: str | None = None
    dialect: str | None = None
    scopes: list[str] = []
    allow_national_id: bool = False
    min_acr: Literal["low", "substantial", "high"] | None = None
    keys_file: str | None = None  # our signing + encryption keys (FTN), created on first use
    extra: dict[str, Any] = {}


class ClientConfig(_Strict):
    """A portal registered with the broker (an OIDC relying party)."""

    client_id: str = Field(min_length=3)
    name: str = ""
    client_type: Literal["confidential", "public"] = "confidential"
    client_secret: str | None = None
    client_secret_sha256: str | None = None
    token_endpoint_auth_method: Literal[
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"
    ] = "client_secret_basic"
    jwks: dict[str, Any] | None = None
    redirect_uris: list[str] = Field(min_length=1)
    post_logout_redirect_uris: list[str] = []
    backchannel_logout_uri: str | None = None
    scopes: list[str] = [
        "openid", "profile", "email", "phone", "customer_accounts", "offline_access"
    ]
    require_pkce: bool = True

    @model_validator(mode="after")
    def _secrets_fit_the_client_type(self) -> ClientConfig:
        if self.client_type == "public":
            if self.client_secret or self.client_secret_sha256:
                raise ValueError("a public client has no client_secret")
            if self.token_endpoint_auth_method != "none":
                raise ValueError("a public client uses token_endpoint_auth_method = 'none'")
            if not self.require_pkce:
                raise ValueError("a public client must require PKCE")
            return self
        if self.token_endpoint_auth_method == "none":
            raise ValueError("a confidential client needs an authentication method")
        if self.token_endpoint_auth_method == "private_key_jwt":
            if not self.jwks:
                raise ValueError("private_key_jwt needs the client's public 'jwks'")
            return self
        if self.client_secret is None and self.client_secret_sha256 is None:
            raise ValueError("a confidential client needs client_secret or client_secret_sha256")
        if self.client_secret is not None and len(self.client_secret) < MIN_CLIENT_SECRET_LENGTH:
            raise ValueError(
                f"client_secret is shorter than {MIN_CLIENT_SECRET_LENGTH} characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return self

    @property
    def secret_digest(self) -> str | None:
        """SHA-256 of the secret: secrets are random, so a fast digest is enough."""
        if self.client_secret_sha256:
            return self.client_secret_sha256.lower()
        if self.client_secret:
            return hashlib.sha256(self.client_secret.encode()).hexdigest()
        return None


class TenantConfig(_Strict):
    """One utility: its own issuer, branding, rules and portals."""

    slug: str = ""
    name: str
    country: str = Field(pattern=r"^[A-Z]{2}$")
    default_locale: Locale = "en"
    locales: list[Locale] = list(LOCALES)
    support_phone: str = ""
    support_hours: str = ""
    support_email: str = ""
    primary_color: str = Field("#1d4f91", pattern=r"^#[0-9a-fA-F]{6}$")
    logo_url: str | None = None
    sender_name: str = ""
    sender_email: str | None = None
    privacy_policy_url: str = ""
    privacy_policy_version: str = "1"
    login_methods: list[str] = ["password"]
    registration_types: list[Literal["private", "company", "administrator"]] = ["private"]
    activation: Literal["code", "link"] = "code"
    password_after_activation: bool = False
    activation_code_ttl_minutes: int = Field(30, ge=1)
    activation_link_ttl_hours: int = Field(48, ge=1)
    activation_max_tries: int = Field(5, ge=1)
    resend_cooldown_seconds: int = Field(60, ge=0)
    password_policy: PasswordPolicy = PasswordPolicy()
    argon2_time_cost: int = Field(2, ge=1)
    argon2_memory_kib: int = Field(19456, ge=8 * 1024)
    argon2_parallelism: int = Field(1, ge=1)
    totp: Literal["off", "optional", "required"] = "optional"
    lockout: LockoutConfig = LockoutConfig()
    binding: BindingConfig = BindingConfig()
    session_hours: float = Field(8, gt=0)
    remember_me_days: float = Field(30, gt=0, le=90)
    access_token_minutes: int = Field(10, ge=1, le=60)
    refresh_token_days: int = Field(30, ge=1)
    id_token_minutes: int = Field(10, ge=1)
    signing_alg: Literal["RS256", "ES256"] = "RS256"
    retention_days: int = Field(365, ge=1)
    retention: RetentionConfig = RetentionConfig()
    upstreams: dict[str, UpstreamConfig] = {}
    clients: list[ClientConfig] = []

    @field_validator("password_policy", mode="before")
    @classmethod
    def _apply_preset(cls, value: Any) -> Any:
        """`preset = "..."` starts from a seed utility's rules; other keys override them."""
        if isinstance(value, dict) and "preset" in value:
            value = dict(value)
            preset = value.pop("preset")
            if preset not in PASSWORD_POLICY_PRESETS:
                raise ValueError(
                    f"unknown preset {preset!r}; choose one of {sorted(PASSWORD_POLICY_PRESETS)}"
                )
            return PASSWORD_POLICY_PRESETS[preset].model_copy(update=value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TenantConfig:
        if self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is not in locales")
        for method in self.login_methods:
            if method != "password" and method not in self.upstreams:
                raise ValueError(
                    f"login method {method!r} has no [upstreams.{method}] section"
                )
        ids = [c.client_id for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("client_id values must be unique within a tenant")
        return self

    def client(self, client_id: str) -> ClientConfig | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


class BrokerConfig(_Strict):
    """The whole file."""

    public_url: str = "http://127.0.0.1:5000"
    database_url: str = "sqlite:///broker.db"
    secret_key: str = Field(min_length=32)
    hmac_key: str = Field(min_length=32)
    # Keys that seal what must be read back (TOTP secrets, signing keys, unsent messages),
    # newest first: the first seals, all open. Empty: one key derived from hmac_key.
    data_keys: list[Annotated[str, Field(min_length=32)]] = []
    redis_url: str | None = None
    dev_mode: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    trusted_proxies: int = Field(0, ge=0)
    emulator_url: str | None = None
    csrf_protection: bool = True
    messaging: MessagingConfig = MessagingConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    tenants: dict[str, TenantConfig] = {}

    @field_validator("tenants")
    @classmethod
    def _slugs(cls, tenants: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for slug in tenants:
            if not TENANT_SLUG.match(slug):
                raise ValueError(f"tenant name {slug!r} must be lowercase letters, digits and '-'")
        return {slug: t.model_copy(update={"slug": slug}) for slug, t in tenants.items()}

    @model_validator(mode="after")
    def _emulator_only_in_dev(self) -> BrokerConfig:
        if self.emulator_url and not self.dev_mode:
            raise ValueError("emulator_url is for development only; set dev_mode = true")
        return self

    def tenant(self, slug: str) -> TenantConfig | None:
        return self.tenants.get(slug)

    @property
    def data_key_secrets(self) -> list[str]:
        """The secrets ``broker.crypto`` seals with (first) and opens with (all)."""
        return list(self.data_keys) or [self.hmac_key]


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (is it misspelled?)"
        lines.append(f"  {path or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> BrokerConfig:
    """Validate ``data`` and install its data keys for this process (``broker.crypto``)."""
    try:
        config = BrokerConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source} is not valid:\n{_describe(error)}") from None
    crypto.install(crypto.DataKeys(config.data_key_secrets))
    return config


def load_config(path: str | Path) -> BrokerConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_config(data, str(path))


ConfigPath = Annotated[str, "path to a TOML file"]
