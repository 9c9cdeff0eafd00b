"""Self-service pages of local accounts: register, activate, forgotten password, profile, TOTP.

Views parse the form, call a flow in ``flows/``, and render ``templates/account/``. The TOTP
step of the login (``/login/totp``) keeps the pending login server-side under an unguessable id
in a cookie of its own, so the session cookie is only set once both factors are done.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l

from flows import activation, password_reset, profile, registration, totp, upstream_login
from policies.password import describe_rules

from .. import db as database
from .. import login_session
from ..attempts import LoginAccount
from ..config import TenantConfig
from ..i18n import current_locale
from ..models import User
from ..security import new_token, sha256_hex
from ..staff.actions import support_actions_for
from ..state import current, db
from ..throttle import ADDRESS_TO_WRITE_TO, EMAIL, throttled
from .customers import PROOF_LABELS
from .login import authorize_flow, finish_login, set_session_cookie
from .oidc import resume_url
from .reauth import FRESH_LOGIN_MINUTES, reauthenticate
from .tenancy import current_login, source_address, tenant_or_404

blueprint = Blueprint("account", __name__, url_prefix="/t/<tenant>")

FIELD_ERRORS = {
    "invalid_email": _l("Enter a valid email address, like name@example.com."),
    "required": _l("This field is required."),
    "too_long": _l("This is too long."),
    "invalid_phone": _l("Enter a valid phone number, with the country code if it is not local."),
    "invalid_choice": _l("Choose one of the options."),
    "must_accept": _l("You need to accept the privacy policy to create an account."),
    "same_email": _l("This is already your email address."),
    "wrong_current": _l("The current password is not correct."),
    "too_soon": _l("Please wait a minute before asking for another link."),
    # The customer number and proof asked at signup (flows.registration, seed 001).
    "wrong_proof": _l("The customer number and code do not match our records."),
    "pin_expired": _l("That PIN has expired. Ask for a new one below."),
    "locked": _l("Too many wrong attempts for this customer number. Try again later, or call "
                 "customer service."),
    "missing_input": _l("Enter the customer number and the code."),
    "proof_not_accepted": _l("That kind of proof is not accepted here."),
    "account_kind_needs_company_user": _l("This is a company account: register as a company."),
    "account_kind_needs_private_user": _l("This is a private account: register as a "
                                          "private customer."),
    "company_user_has_one_account": _l("A company user holds one company account."),
}


def _page(template: str, tenant: TenantConfig, status: int = 200, **context: object):
    return render_template(f"account/{template}", tenant=tenant,
                           field_errors=FIELD_ERRORS, **context), status


def _password_tenant(slug: str) -> TenantConfig:
    """The tenant, when it offers local accounts at all."""
    tenant = tenant_or_404(slug)
    if "password" not in tenant.login_methods:
        abort(404)
    return tenant


def _rules(tenant: TenantConfig) -> list:
    return describe_rules(tenant.password_policy)


def _flow_id(tenant: str) -> str | None:
    flow = authorize_flow(tenant, request.values.get("flow"))
    return flow.id if flow else None


# --- Logging in after a self-service step -----------------------------------------------

PENDING_COOKIE = "bpending_{}"
# Set by a registration: only the registering browser keeps its password at activation.
REGISTRANT_COOKIE = "bregistrant_{}"
# Set by an activation that continues to the password-creation step: binds the step here.
CREATE_PASSWORD_COOKIE = "bcreatepw_{}"


def _pending_cookie(tenant: str) -> str:
    return PENDING_COOKIE.format(tenant)


def _browser_cookie(response: Response, name: str, tenant: TenantConfig, value: str,
                    max_age: int) -> Response:
    response.set_cookie(name.format(tenant.slug), value, path=f"/t/{tenant.slug}",
                        max_age=max_age, httponly=True, samesite="Lax",
                        secure=current().config.public_url.startswith("https://"))
    return response


def _log_in(tenant: TenantConfig, user: User, authorize_flow_id: str | None, *,
            remember: bool = False, amr: list[str] | None = None) -> Response:
    """Start the session (or the TOTP step first) and continue where the user was going."""
    pending = second_factor_redirect(tenant, authorize_flow_id, user, remember)
    if pending is not None:
        return pending
    session = db()
    login, token = login_session.start(session, tenant, user, amr=amr or ["pwd"],
                                       remember=remember)
    session.commit()
    return finish_login(tenant, authorize_flow(tenant.slug, authorize_flow_id), token, login)


def second_factor_redirect(tenant: TenantConfig, authorize_flow_id: str | None,
                           user: User | LoginAccount, remember: bool, *,
                           amr: list[str] | None = None, acr: str = "low",
                           accepted: login_session.PasswordAccepted | None = None,
                           then_link: dict[str, Any] | None = None,
                           ) -> Response | None:
    """Called after a right first factor (the login page's password, an upstream login that
    linked an existing account): None when no second factor is due, else a redirect to the
    TOTP step with the pending login (and the first factor's ``amr``/``acr``) stored
    server-side. ``accepted`` (a password's bookkeeping) is then written with it; when None
    is returned it is left to ``login_session.start``. ``then_link``: an upstream identity
    to link once the second factor is right (``upstream_login.Step.link``)."""
    if not totp.second_factor_needed(tenant, user):
        return None
    session = db()
    database.end_stand_alone(session)  # the bookkeeping and the pending login: together
    if accepted is not None:
        accepted.write(session)
    pending = totp.start_pending_login(session, tenant, user,
                                       authorize_flow_id=authorize_flow_id, remember=remember,
                                       amr=amr, acr=acr, then_link=then_link)
    session.commit()
    response = redirect(url_for("account.login_totp", tenant=tenant.slug))
    response.set_cookie(_pending_cookie(tenant.slug), pending.id, path=f"/t/{tenant.slug}",
                        max_age=totp.PENDING_MINUTES * 60, httponly=True, samesite="Lax",
                        secure=current().config.public_url.startswith("https://"))
    return response


# --- Registration -------------------------------------------------------------------------


def _signup_proof(tenant: TenantConfig) -> dict[str, object]:
    """What the form needs to ask for the customer number and proof first (seed 001)."""
    if not registration.asks_for_customer_number(tenant):
        return {"signup_proof": None}
    kind = registration.signup_proof_kind(tenant)
    return {"signup_proof": {"kind": kind, "label": PROOF_LABELS[kind]}}


@blueprint.get("/register")
def register_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    return _page("register.html", tenant_config, rules=_rules(tenant_config), form={},
                 errors={}, failures=[], flow_id=_flow_id(tenant) or "",
                 **_signup_proof(tenant_config))


@blueprint.post("/register")
@throttled("registration", target=ADDRESS_TO_WRITE_TO)
def register_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    flow_id = _flow_id(tenant)
    values = request.form
    types = tenant_config.registration_types
    form = registration.RegistrationForm(
        email=values.get("email", ""),
        name=values.get("name", ""),
        password=values.get("password", ""),
        password_confirmation=values.get("password_confirmation", ""),
        phone=values.get("phone", ""),
        registration_type=values.get("registration_type", types[0] if len(types) == 1 else ""),
        privacy_accepted=values.get("privacy") == "on",
        ebill_opt_in=values.get("ebill") == "on",
        locale=current_locale(),
        customer_number=values.get("customer_number", ""),
        proof_value=values.get("proof_value", ""),
    )
    config = current().config
    registrant = new_token()
    result = registration.register(
        db(), tenant_config, form, hmac_key=config.hmac_key, secret_key=config.secret_key,
        public_url=config.public_url, source_address=source_address(),
        authorize_flow_id=flow_id, registrant_digest=sha256_hex(registrant),
    )
    if not result.ok:
        return _page("register.html", tenant_config, 400, rules=_rules(tenant_config),
                     form=values, errors=result.errors, failures=result.password_failures,
                     flow_id=flow_id or "", locked_until=result.locked_until,
                     **_signup_proof(tenant_config))
    # Set for a new and a known address alike: the answer must not tell them apart.
    return _browser_cookie(
        Response(*_page("check_email.html", tenant_config, email=form.email.strip(),
                        flow_id=flow_id or "")),
        REGISTRANT_COOKIE, tenant_config, registrant,
        max_age=tenant_config.activation_link_ttl_hours * 3600,
    )


def _registrant() -> str | None:
    tenant = (request.view_args or {}).get("tenant", "")
    return request.cookies.get(REGISTRANT_COOKIE.format(tenant))


# --- Activation ---------------------------------------------------------------------------


@blueprint.get("/activate")
def activate_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    return _page("activate_code.html", tenant_config, email=request.args.get("email", ""),
                 flow_id=_flow_id(tenant) or "", error=None)


@blueprint.post("/activate")
@throttled("activation", target=EMAIL)
def activate_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    email = request.form.get("email", "")
    result = activation.activate_with_code(
        db(), tenant_config, email, request.form.get("code", ""),
        hmac_key=current().config.hmac_key, source_address=source_address(),
        browser_token=_registrant(),
    )
    if result.outcome != "activated" or result.user is None:
        return _page("activate_code.html", tenant_config, 400 if result.outcome == "invalid"
                     else 429, email=email, flow_id=_flow_id(tenant) or "",
                     error=result.outcome, locked_until=result.locked_until)
    return _after_activation(tenant_config, result)


def _after_activation(tenant: TenantConfig, result: activation.ActivationResult) -> Response:
    user = result.user
    assert user is not None
    flow_id = result.authorize_flow_id
    if user.password_hash is None:
        session = db()
        browser = new_token()
        step = activation.start_password_creation(session, tenant, user,
                                                  authorize_flow_id=flow_id,
                                                  browser_token=browser)
        session.commit()
        return _browser_cookie(
            redirect(url_for("account.create_password_page", tenant=tenant.slug, step=step.id)),
            CREATE_PASSWORD_COOKIE, tenant, browser,
            max_age=activation.CREATE_PASSWORD_MINUTES * 60,
        )
    if tenant.activation == "code":
        # The code was typed on the page that follows registration, in this browser.
        return _log_in(tenant, user, flow_id)
    # A link may be opened anywhere (another device, a mail preview): log in with the password.
    login_url = url_for("login.login_page", tenant=tenant.slug,
                        **({"flow": flow_id} if flow_id else {}))
    return Response(*_page("activated.html", tenant, login_url=login_url))


@blueprint.get("/activate/<token>")
def activate_link_page(tenant: str, token: str):  # type: ignore[no-untyped-def]
    """GET never spends the link: mail scanners and previews fetch links on their own."""
    tenant_config = _password_tenant(tenant)
    status = activation.activation_link_status(db(), tenant_config, token,
                                               secret_key=current().config.secret_key)
    if status != "valid":
        return _page("link_invalid.html", tenant_config, 410, reason=status, kind="activation")
    return _page("activate_link.html", tenant_config)


@blueprint.post("/activate/<token>")
def activate_link_submit(tenant: str, token: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    result = activation.activate_with_link(db(), tenant_config, token,
                                           secret_key=current().config.secret_key,
                                           source_address=source_address(),
                                           browser_token=_registrant())
    if result.outcome != "activated":
        return _page("link_invalid.html", tenant_config, 410, reason=result.outcome,
                     kind="activation")
    return _after_activation(tenant_config, result)


@blueprint.get("/activate/password")
def create_password_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    step_id = request.args.get("step", "")
    if activation.password_creation_step(db(), tenant_config, step_id,
                                         _create_password_browser(tenant)) is None:
        return _page("link_invalid.html", tenant_config, 410, reason="expired", kind="password")
    return _page("create_password.html", tenant_config, step=step_id,
                 rules=_rules(tenant_config), failures=[])


def _create_password_browser(tenant: str) -> str | None:
    return request.cookies.get(CREATE_PASSWORD_COOKIE.format(tenant))


@blueprint.post("/activate/password")
def create_password_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    step_id = request.form.get("step", "")
    result = activation.create_password(
        db(), tenant_config, step_id, request.form.get("password", ""),
        request.form.get("password_confirmation", ""), source_address=source_address(),
        browser_token=_create_password_browser(tenant),
    )
    if result is None:
        return _page("link_invalid.html", tenant_config, 410, reason="expired", kind="password")
    if not result.ok or result.user is None:
        return _page("create_password.html", tenant_config, 400, step=step_id,
                     rules=_rules(tenant_config),
                     failures=result.check.failures if result.check else [])
    return _log_in(tenant_config, result.user, result.authorize_flow_id)


@blueprint.get("/activation/resend")
def resend_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    return _page("resend.html", tenant_config, email=request.args.get("email", ""))


@blueprint.post("/activation/resend")
@throttled("registration", target=ADDRESS_TO_WRITE_TO)  # sends an email, as registering does
def resend_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    email = request.form.get("email", "")
    config = current().config
    session = db()
    activation.resend_activation(session, tenant_config, email, hmac_key=config.hmac_key,
                                 secret_key=config.secret_key, public_url=config.public_url)
    session.commit()
    return _page("resent.html", tenant_config, email=email.strip())


# --- Forgotten password -------------------------------------------------------------------


@blueprint.get("/forgot-password")
def forgot_password_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    return _page("forgot_password.html", tenant_config, email=request.args.get("email", ""),
                 error=None)


@blueprint.post("/forgot-password")
@throttled("forgot_password", target=EMAIL)
def forgot_password_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    email = request.form.get("email", "")
    if "@" not in email:
        return _page("forgot_password.html", tenant_config, 400, email=email,
                     error="invalid_email")
    config = current().config
    password_reset.request_reset(db(), tenant_config, email, public_url=config.public_url,
                                 source_address=source_address())
    return _page("reset_sent.html", tenant_config, email=email.strip())


@blueprint.get("/reset-password/<token>")
def reset_password_page(tenant: str, token: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    if password_reset.reset_link_user(db(), tenant_config, token) is None:
        return _page("link_invalid.html", tenant_config, 410, reason="invalid", kind="reset")
    return _page("reset_password.html", tenant_config, rules=_rules(tenant_config), failures=[])


@blueprint.post("/reset-password/<token>")
def reset_password_submit(tenant: str, token: str):  # type: ignore[no-untyped-def]
    tenant_config = _password_tenant(tenant)
    result = password_reset.complete_reset(
        db(), tenant_config, token, request.form.get("password", ""),
        request.form.get("password_confirmation", ""), source_address=source_address(),
    )
    if not result.link_valid:
        return _page("link_invalid.html", tenant_config, 410, reason="invalid", kind="reset")
    if not result.done:
        return _page("reset_password.html", tenant_config, 400, rules=_rules(tenant_config),
                     failures=result.check.failures if result.check else [])
    response = Response(*_page("reset_done.html", tenant_config))
    response.delete_cookie(login_session.cookie_name(tenant), path=f"/t/{tenant}")
    return response


# --- Profile ------------------------------------------------------------------------------


def _profile_page(tenant: TenantConfig, user: User, status: int = 200, **context: object):
    values: dict[str, object] = {
        "errors": {}, "failures": [], "notice": None, "form": {},
        "rules": _rules(tenant), "totp_offered": totp.totp_offered(tenant),
        "fresh_minutes": FRESH_LOGIN_MINUTES,
        "support_actions": support_actions_for(db(), user.id, limit=20),
    }
    values.update(context)
    return _page("profile.html", tenant, status, user=user, **values)


def _logged_in(tenant: TenantConfig):  # type: ignore[no-untyped-def]
    login, user = current_login(tenant)
    if login is None or user is None:
        return None, None
    return login, user


@blueprint.get("/profile")
def profile_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    _, user = _logged_in(tenant_config)
    if user is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    return _profile_page(tenant_config, user, notice=request.args.get("notice"))


@blueprint.post("/profile")
def profile_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    login, user = _logged_in(tenant_config)
    if user is None or login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    action = request.form.get("action", "")
    session = db()
    config = current().config
    if action == "details":
        errors = profile.update_details(session, tenant_config, user,
                                        name=request.form.get("name", ""),
                                        phone=request.form.get("phone", ""),
                                        source_address=source_address())
        if errors:
            return _profile_page(tenant_config, user, 400, errors=errors, form=request.form)
        return redirect(url_for("account.profile_page", tenant=tenant, notice="details_saved"))
    if action == "email":
        # The new address would take "forgot password" with it: a stolen session alone must
        # not be enough to ask for it.
        refused = reauthenticate(tenant_config, login, user,
                                 request.form.get("email_current_password", ""),
                                 refused_event="email_change_refused")
        if refused is not None:
            return _profile_page(tenant_config, user, 429 if refused == "locked" else 401,
                                 errors={"email_current_password": refused}, form=request.form)
        error = profile.request_email_change(session, tenant_config, user,
                                             request.form.get("new_email", ""),
                                             public_url=config.public_url,
                                             source_address=source_address())
        if error:
            return _profile_page(tenant_config, user, 429 if error == "too_soon" else 400,
                                 errors={"new_email": error}, form=request.form)
        return redirect(url_for("account.profile_page", tenant=tenant, notice="email_sent"))
    if action == "password":
        result = profile.change_password(
            session, tenant_config, user, current=request.form.get("current_password", ""),
            new=request.form.get("password", ""),
            confirmation=request.form.get("password_confirmation", ""),
            keep_session_id=login.id, source_address=source_address(),
        )
        if not result.ok:
            errors = {"current_password": result.error} if result.error else {}
            return _profile_page(tenant_config, user, 400, errors=errors,
                                 failures=result.failures, locked_until=result.locked_until)
        return redirect(url_for("account.profile_page", tenant=tenant,
                                notice="password_changed"))
    abort(400)


@blueprint.get("/profile/email/<token>")
def email_change_page(tenant: str, token: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    change = profile.pending_email_change(db(), tenant_config, token)
    if change is None:
        return _page("link_invalid.html", tenant_config, 410, reason="invalid", kind="email")
    return _page("email_change_confirm.html", tenant_config, new_email=change.target)


@blueprint.post("/profile/email/<token>")
def email_change_submit(tenant: str, token: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    outcome = profile.confirm_email_change(db(), tenant_config, token,
                                           source_address=source_address())
    if outcome == "invalid":
        return _page("link_invalid.html", tenant_config, 410, reason="invalid", kind="email")
    return _page("email_changed.html", tenant_config, 409 if outcome == "taken" else 200,
                 outcome=outcome)


# --- TOTP in the profile ------------------------------------------------------------------


def _enrolment_page(tenant: TenantConfig, user: User, flow, action_url: str,  # type: ignore[no-untyped-def]
                    status: int = 200, error: str | None = None, *, reauth: bool = False,
                    reauth_error: str | None = None):
    """``reauth``: the profile's enrolment, which asks for the current password too (the
    login's enrolment follows the password just given)."""
    secret = totp.enrolment_secret(flow)
    uri = totp.provisioning_uri(tenant, user, secret)
    return _page("totp_setup.html", tenant, status, enrol_id=flow.id, secret=secret,
                 qr=totp.qr_code_data_uri(uri), action_url=action_url, error=error,
                 reauth=reauth, reauth_error=reauth_error,
                 has_password=user.password_hash is not None, fresh_minutes=FRESH_LOGIN_MINUTES)


@blueprint.get("/profile/totp")
def profile_totp_page(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    _, user = _logged_in(tenant_config)
    if user is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    if not totp.totp_offered(tenant_config):
        abort(404)
    if user.totp_secret:
        return _page("totp_status.html", tenant_config, error=None)
    session = db()
    flow = totp.start_enrolment(session, tenant_config, user, purpose="profile")
    session.commit()
    return _enrolment_page(tenant_config, user, flow,
                           url_for("account.profile_totp_submit", tenant=tenant), reauth=True)


@blueprint.post("/profile/totp")
def profile_totp_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    login, user = _logged_in(tenant_config)
    if user is None or login is None:
        return redirect(url_for("login.login_page", tenant=tenant))
    if not totp.totp_offered(tenant_config):
        abort(404)
    session = db()
    config = current().config
    if request.form.get("action") == "disable":
        result = totp.verify_second_factor(session, tenant_config, user,
                                           request.form.get("code", ""),
                                           hmac_key=config.hmac_key,
                                           source_address=source_address())
        if not result.ok or not totp.disable_totp(session, tenant_config, user,
                                                  source_address=source_address()):
            return _page("totp_status.html", tenant_config, 400,
                         error="required" if result.ok else result.outcome)
        session.commit()
        return redirect(url_for("account.profile_page", tenant=tenant, notice="totp_off"))
    action_url = url_for("account.profile_totp_submit", tenant=tenant)
    flow = totp.enrolment(session, tenant_config, request.form.get("enrol", ""), user.id)
    if flow is None:
        return redirect(action_url)
    # A stolen session must not turn on a second factor of its own: the owner, locked out by
    # it, would find it still on after resetting the password.
    refused = reauthenticate(tenant_config, login, user, request.form.get("current_password", ""),
                             refused_event="totp_enrolment_refused")
    if refused is not None:
        return _enrolment_page(tenant_config, user, flow, action_url,
                               429 if refused == "locked" else 401, reauth=True,
                               reauth_error=refused)
    codes = totp.confirm_enrolment(session, tenant_config, user, flow,
                                   request.form.get("code", ""), hmac_key=config.hmac_key,
                                   source_address=source_address())
    if codes is None:
        return _enrolment_page(tenant_config, user, flow, action_url, 400, error="invalid",
                               reauth=True)
    return _page("recovery_codes.html", tenant_config, codes=codes,
                 continue_url=url_for("account.profile_page", tenant=tenant))


# --- The TOTP step of the login -----------------------------------------------------------


def _pending(tenant: TenantConfig):  # type: ignore[no-untyped-def]
    return totp.pending_login(db(), tenant, request.cookies.get(_pending_cookie(tenant.slug)))


def _session_after_second_factor(tenant: TenantConfig, flow, user: User):  # type: ignore[no-untyped-def]
    """Spend the pending login and open the session with both factors; None if already spent."""
    session = db()
    if not totp.finish_pending_login(session, flow):
        session.rollback()
        return None
    if flow.data.get("then_link"):
        upstream_login.link_after_second_factor(session, tenant, user, flow.data["then_link"],
                                                source_address())
    first_factor = [m for m in flow.data.get("amr", ["pwd"]) if m != "otp"]
    login, token = login_session.start(session, tenant, user, amr=[*first_factor, "otp"],
                                       acr=flow.data.get("acr", "low"),
                                       remember=bool(flow.data.get("remember")))
    session.commit()
    return login, token, authorize_flow(tenant.slug, flow.data.get("authorize_flow"))


def _login_expired(tenant: TenantConfig) -> Response:
    response = redirect(url_for("login.login_page", tenant=tenant.slug))
    response.delete_cookie(_pending_cookie(tenant.slug), path=f"/t/{tenant.slug}")
    return response


@blueprint.get("/login/totp")
def login_totp(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    pending = _pending(tenant_config)
    if pending is None:
        return _login_expired(tenant_config)
    flow, user = pending
    if user.totp_secret:
        return _page("login_totp.html", tenant_config, error=None)
    session = db()
    enrol = totp.start_enrolment(session, tenant_config, user, purpose="login")
    session.commit()
    return _enrolment_page(tenant_config, user, enrol,
                           url_for("account.login_totp_submit", tenant=tenant))


@blueprint.post("/login/totp")
@throttled("totp")
def login_totp_submit(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = tenant_or_404(tenant)
    pending = _pending(tenant_config)
    if pending is None:
        return _login_expired(tenant_config)
    flow, user = pending
    session = db()
    config = current().config
    code = request.form.get("code", "")
    if user.totp_secret:
        result = totp.verify_second_factor(session, tenant_config, user, code,
                                           hmac_key=config.hmac_key,
                                           source_address=source_address())
        if not result.ok:
            return _page("login_totp.html", tenant_config,
                         429 if result.outcome == "locked" else 401,
                         error=result.outcome, locked_until=result.locked_until)
        opened = _session_after_second_factor(tenant_config, flow, user)
        if opened is None:
            return _login_expired(tenant_config)
        login, token, authorize = opened
        response = finish_login(tenant_config, authorize, token, login)
        response.delete_cookie(_pending_cookie(tenant), path=f"/t/{tenant}")
        return response
    action_url = url_for("account.login_totp_submit", tenant=tenant)
    enrol = totp.enrolment(session, tenant_config, request.form.get("enrol", ""), user.id)
    if enrol is None:
        return redirect(url_for("account.login_totp", tenant=tenant))
    codes = totp.confirm_enrolment(session, tenant_config, user, enrol, code,
                                   hmac_key=config.hmac_key, source_address=source_address())
    if codes is None:
        return _enrolment_page(tenant_config, user, enrol, action_url, 400, error="invalid")
    opened = _session_after_second_factor(tenant_config, flow, user)
    if opened is None:
        return _login_expired(tenant_config)
    login, token, authorize = opened
    target = resume_url(authorize) if authorize else url_for("login.signed_in", tenant=tenant)
    response = Response(*_page("recovery_codes.html", tenant_config, codes=codes,
                               continue_url=target))
    set_session_cookie(response, tenant_config, token, login)
    response.delete_cookie(_pending_cookie(tenant), path=f"/t/{tenant}")
    return response
