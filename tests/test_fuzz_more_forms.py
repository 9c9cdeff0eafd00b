"""Hypothesis against every POST form and endpoint not fuzzed in test_fuzz_forms.py or
test_fuzz_admin_api.py: activation (code, link, password creation, resend), password reset,
unlock link, profile, email change, TOTP (profile and login step), forgot customer number/PIN,
customer accounts (skip, invite, remove, accept), privacy (delete, consent), linked identities,
upstream first-login steps, OIDC revoke/introspect/userinfo/logout, and the support console.

Each form is reached with what makes it real (a live link or code, a pending login, a signed-in
browser) as well as with garbage and anonymously. Properties, as in test_fuzz_forms.py: no input
makes a server error, and an input the broker refuses changes no row (bookkeeping aside, see
tests/fuzzing.py). Read-only endpoints (introspection, userinfo) may change nothing at all.
"""

from __future__ import annotations

import base64
import itertools
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pyotp
import pytest
from argon2 import PasswordHasher
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from broker import login_session
from broker.models import (
    Binding,
    CustomerAccount,
    FederatedIdentity,
    Staff,
    Token,
    User,
    utcnow,
)
from broker.passwords import hash_password
from broker.security import new_token, sha256_hex
from broker.staff import actions as staff_actions
from broker.staff import auth
from flows import activation, delegation, links, password_reset, profile, totp, unlock
from flows import upstream_login as journey
from providers.identity import UpstreamIdentity

from .accounts_support import code_in, last_mail, link_in
from .conftest import PORTAL_SECRET
from .fuzzing import (
    ANY_TEXT,
    ASCII,
    CUSTOMER_NUMBER,
    FUZZ,
    KNOWN_EMAIL,
    KNOWN_PASSWORD,
    NASTY,
    PORTAL,
    TENANT,
    make_fuzz_app,
    post_and_check,
)
from .fuzzing import form as _form
from .staff_support import STAFF_PASSWORD, add_staff, build_scene, staff_token, totp_now

# Two dozen forms on two databases: fewer examples each than test_fuzz_forms.py keeps the file
# under a minute with two workers; each example still mixes real values with hostile text.
FEW = settings(FUZZ, max_examples=20)
NO = "fjordvarme"  # activation code, PIN proofs (forgot PIN)
ES = "aguas-del-valle"  # activation link, then the password-creation step
GOOD_PASSWORD = "Vandhane-Blaa-2024!"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
SIX_DIGITS = st.text("0123456789", min_size=6, max_size=6)
ROW_IDS = st.one_of(st.integers(min_value=-5, max_value=50), st.integers(min_value=2**31 - 2))
_serial = itertools.count()
SIGNED_IN = st.sampled_from([True, True, False])  # mostly with a session: that is the form
# A NUL in any field is refused before a view runs (broker/app.py, covered by
# test_fuzz_forms.py); text without one reaches each form's own logic. ANY_TEXT, NUL and all,
# still goes into the paths.
TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=300),
    st.sampled_from([text for text in NASTY if "\x00" not in text]),
)


@pytest.fixture
def fuzz_app(database_url):  # type: ignore[no-untyped-def]
    app = make_fuzz_app(database_url)
    yield app
    app.extensions["broker"].engine.dispose()


# --- scene helpers ----------------------------------------------------------------------------


def _sessions(app):  # type: ignore[no-untyped-def]
    return app.extensions["broker"].sessions


def _config(app):  # type: ignore[no-untyped-def]
    return app.extensions["broker"].config


def _known_user_id(app) -> int:  # type: ignore[no-untyped-def]
    with _sessions(app)() as db:
        return db.query(User.id).filter_by(tenant=TENANT, email=KNOWN_EMAIL).scalar()


def _add_user(app, tenant: str = TENANT, email: str | None = None, *,  # type: ignore[no-untyped-def]
              password: bool = True, **fields: Any) -> int:
    """A user whose password is KNOWN_PASSWORD (hashed once per tenant and app)."""
    hashes = app.config.setdefault("FUZZ_HASHES", {})
    if password and tenant not in hashes:
        hashes[tenant] = hash_password(_config(app).tenants[tenant], KNOWN_PASSWORD)
    values: dict[str, Any] = {"status": "active", "email_verified": True, "name": "Fuzz User",
                              "password_hash": hashes[tenant] if password else None}
    values.update(fields)
    with _sessions(app).begin() as db:
        user = User(tenant=tenant, subject=new_token(16),
                    email=email or f"user{next(_serial)}@example.dk", **values)
        db.add(user)
        db.flush()
        return user.id


def _sign_in(app, user_id: int, tenant: str = TENANT) -> str:  # type: ignore[no-untyped-def]
    """A fresh login session (a fuzzed logout or deletion ends only its own)."""
    with _sessions(app).begin() as db:
        user = db.get(User, user_id)
        _, token = login_session.start(db, _config(app).tenants[tenant], user, amr=["pwd"])
        return token


def _browser(app, user_id: int | None, signed_in: bool, tenant: str = TENANT) -> dict[str, str]:
    """The cookies of a signed-in browser, or of an anonymous one."""
    if not signed_in or user_id is None:
        return {}
    return {login_session.cookie_name(tenant): _sign_in(app, user_id, tenant)}


def _path_token(valid: str) -> st.SearchStrategy[str]:
    """A token for a URL path: the live one, a near miss, or anything (quoted for the path)."""
    return st.one_of(st.just(valid), st.just(valid[:-1]), st.just(valid + "x"), ANY_TEXT,
                     ASCII).map(lambda token: quote(token, safe="") or "x")


def _fields(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Every field present (a browser's submission), or each present or missing."""
    return st.one_of(st.fixed_dictionaries(fields), _form(**fields))


def _refused(answer) -> bool:  # type: ignore[no-untyped-def]
    return answer.status_code >= 400


def _to(answer, path_end: str) -> bool:  # type: ignore[no-untyped-def]
    """A redirect (to the login page, back to the form): the broker did nothing."""
    return answer.status_code in (302, 303) and urlsplit(answer.location).path.endswith(path_end)


# --- activation -------------------------------------------------------------------------------


def _pending_user(app, tenant: str, email: str) -> int:  # type: ignore[no-untyped-def]
    """A registered, not yet activated user with a live activation email."""
    user_id = _add_user(app, tenant, email, status="pending", email_verified=False)
    config = _config(app)
    with _sessions(app).begin() as db:
        activation.issue_activation(db, config.tenants[tenant], db.get(User, user_id),
                                    hmac_key=config.hmac_key, secret_key=config.secret_key,
                                    public_url=config.public_url)
    return user_id


def test_the_activation_code_form_never_fails_and_a_refused_code_changes_nothing(fuzz_app):
    @FEW
    @given(_fields(email=st.one_of(TEXT, st.sampled_from(["live", "LIVE"])),
                 code=st.one_of(TEXT, st.just("live"), SIX_DIGITS), flow=TEXT),
           st.one_of(st.none(), ASCII))
    def check(form: dict[str, str], registrant: str | None) -> None:
        # A fresh registration each time: wrong codes spend the code's tries (then a 429).
        email = f"pending{next(_serial)}@example.no"
        _pending_user(fuzz_app, NO, email)
        live = {"live": email, "LIVE": f" {email.upper()} "}
        if form.get("email") in live:
            form["email"] = live[form["email"]]
        if form.get("code") == "live":
            form["code"] = code_in(last_mail(fuzz_app, email))
        cookies = {f"bregistrant_{NO}": registrant} if registrant else None
        post_and_check(fuzz_app, f"/t/{NO}/activate", form, refused=_refused, cookies=cookies,
                       tenant=NO)

    check()


def test_the_activation_link_never_fails_and_a_refused_link_changes_nothing(fuzz_app):
    email = "pending@example.dk"
    _pending_user(fuzz_app, TENANT, email)
    signed = link_in(last_mail(fuzz_app, email)).rsplit("/", 1)[1]

    @FEW
    @given(_path_token(signed), _fields(flow=TEXT, password=TEXT))
    def check(token: str, form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/activate/{token}", form, refused=_refused)

    check()


def test_the_password_creation_step_never_fails_and_a_refused_password_changes_nothing(
    fuzz_app,
):
    user_id = _add_user(fuzz_app, ES, "nopassword@example.es", password=False)
    browser = new_token()
    with _sessions(fuzz_app).begin() as db:
        step = activation.start_password_creation(
            db, _config(fuzz_app).tenants[ES], db.get(User, user_id), authorize_flow_id=None,
            browser_token=browser,
        ).id
    password = st.one_of(TEXT, st.just(GOOD_PASSWORD))

    @FEW
    @given(_fields(step=st.one_of(st.just(step), TEXT), password=password,
                 password_confirmation=password),
           st.one_of(st.just(browser), st.none(), ASCII))
    def check(form: dict[str, str], cookie: str | None) -> None:
        cookies = {f"bcreatepw_{ES}": cookie} if cookie else None
        post_and_check(fuzz_app, f"/t/{ES}/activate/password", form, refused=_refused,
                       cookies=cookies, tenant=ES)

    check()


def test_the_activation_resend_form_never_fails_and_a_refused_request_changes_nothing(
    fuzz_app,
):
    email = "pending@example.no"
    _pending_user(fuzz_app, NO, email)

    @FEW
    @given(_fields(email=st.one_of(TEXT, st.just(email), st.just(KNOWN_EMAIL))))
    def check(form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{NO}/activation/resend", form, refused=_refused,
                       tenant=NO)

    check()


# --- links from emails: password reset, unlock, email change ---------------------------------


def _link(app, purpose: str, user_id: int, target: str, tenant: str = TENANT) -> str:  # type: ignore[no-untyped-def]
    with _sessions(app).begin() as db:
        return links.issue(db, tenant=tenant, user_id=user_id, purpose=purpose, target=target,
                           ttl=timedelta(hours=1))


def test_the_password_reset_form_never_fails_and_a_refused_reset_changes_nothing(fuzz_app):
    token = _link(fuzz_app, password_reset.PURPOSE, _known_user_id(fuzz_app), KNOWN_EMAIL)
    password = st.one_of(TEXT, st.just(GOOD_PASSWORD))

    @FEW
    @given(_path_token(token), _fields(password=password, password_confirmation=password))
    def check(path_token: str, form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/reset-password/{path_token}", form,
                       refused=_refused)

    check()


def test_the_unlock_link_never_fails_and_a_refused_link_changes_nothing(fuzz_app):
    user_id = _add_user(fuzz_app, email="locked@example.dk", failed_logins=3, lock_count=1,
                        locked_at=utcnow(), locked_until=utcnow() + timedelta(hours=1))
    token = _link(fuzz_app, unlock.PURPOSE, user_id, "locked@example.dk")

    @FEW
    @given(_path_token(token), _fields(password=TEXT, csrf_token=TEXT))
    def check(path_token: str, form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/unlock/{path_token}", form, refused=_refused)

    check()


def test_the_email_change_link_never_fails_and_a_refused_link_changes_nothing(fuzz_app):
    token = _link(fuzz_app, profile.EMAIL_CHANGE, _known_user_id(fuzz_app), "new@example.dk")

    @FEW
    @given(_path_token(token), _fields(email=TEXT), SIGNED_IN)
    def check(path_token: str, form: dict[str, str], signed_in: bool) -> None:
        # 409 "taken" spends the link on purpose; only 410 is a refusal that must change nothing.
        post_and_check(fuzz_app, f"/t/{TENANT}/profile/email/{path_token}", form,
                       refused=lambda answer: answer.status_code == 410, cookie=signed_in)

    check()


# --- profile and TOTP -------------------------------------------------------------------------


def test_the_profile_forms_never_fail_and_a_refused_change_changes_nothing(fuzz_app):
    action = st.one_of(st.sampled_from(["details", "email", "password"]), TEXT)
    password = st.one_of(TEXT, st.just(GOOD_PASSWORD))

    @FEW
    @given(_fields(action=action, name=TEXT, phone=st.one_of(TEXT, st.just("+4520123456")),
                 new_email=st.one_of(TEXT, st.emails().map(str), st.just(KNOWN_EMAIL)),
                 current_password=st.one_of(TEXT, st.just(KNOWN_PASSWORD)),
                 password=password, password_confirmation=password),
           SIGNED_IN)
    def check(form: dict[str, str], signed_in: bool) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/profile", form, cookie=signed_in,
                       refused=lambda answer: _refused(answer) or not signed_in)

    check()


def test_the_profile_totp_form_never_fails_and_a_refused_code_changes_nothing(fuzz_app):
    user_id = _known_user_id(fuzz_app)
    with _sessions(fuzz_app).begin() as db:
        flow = totp.start_enrolment(db, _config(fuzz_app).tenants[TENANT], db.get(User, user_id),
                                    purpose="profile")
        enrol, secret = flow.id, totp.enrolment_secret(flow)

    @FEW
    @given(_fields(action=st.one_of(st.just("disable"), TEXT),
                 enrol=st.one_of(st.just(enrol), TEXT),
                 code=st.one_of(st.just("current"), TEXT, SIX_DIGITS)),
           SIGNED_IN)
    def check(form: dict[str, str], signed_in: bool) -> None:
        if form.get("code") == "current":
            form["code"] = pyotp.TOTP(secret).now()
        post_and_check(fuzz_app, f"/t/{TENANT}/profile/totp", form, cookie=signed_in,
                       refused=lambda answer: _refused(answer) or not signed_in
                       or _to(answer, "/profile/totp"))

    check()


def test_the_login_totp_step_never_fails_and_a_refused_code_changes_nothing(fuzz_app):
    tenant = _config(fuzz_app).tenants[TENANT]
    secret = pyotp.random_base32()
    with_totp = _add_user(fuzz_app, email="totp@example.dk", totp_secret=secret)
    without_totp = _add_user(fuzz_app, email="enrol@example.dk")

    @FEW
    @given(st.sampled_from(["with_totp", "without_totp", "garbage", "none"]),
           _fields(code=st.one_of(st.just("current"), TEXT, SIX_DIGITS),
                 enrol=st.one_of(st.just("live"), TEXT)))
    def check(who: str, form: dict[str, str]) -> None:
        cookie: str | None = {"garbage": new_token(), "none": None}.get(who)
        code_secret = secret
        with _sessions(fuzz_app).begin() as db:
            if who in ("with_totp", "without_totp"):
                user = db.get(User, with_totp if who == "with_totp" else without_totp)
                cookie = totp.start_pending_login(db, tenant, user, authorize_flow_id=None,
                                                  remember=False).id
                if who == "without_totp":
                    enrolment = totp.start_enrolment(db, tenant, user, purpose="login")
                    code_secret = totp.enrolment_secret(enrolment)
                    if form.get("enrol") == "live":
                        form["enrol"] = enrolment.id
        if form.get("code") == "current":
            form["code"] = pyotp.TOTP(code_secret).now()
        post_and_check(fuzz_app, f"/t/{TENANT}/login/totp", form,
                       cookies={f"bpending_{TENANT}": cookie} if cookie else None,
                       refused=lambda answer: _refused(answer) or _to(answer, "/login")
                       or _to(answer, "/login/totp"))

    check()


# --- forgot customer number / PIN -------------------------------------------------------------


def test_the_forgot_pin_form_never_fails_and_a_refused_request_changes_nothing(fuzz_app):
    with _sessions(fuzz_app).begin() as db:
        db.add(CustomerAccount(tenant=NO, number="100234", name="Kari Nordmann",
                               address_label="Fjordgata 1", email="kari@example.no",
                               phone="+4791234567"))

    @FEW
    @given(_fields(email=st.one_of(TEXT, st.just("kari@example.no")),
                 phone=st.one_of(TEXT, st.just("+4791234567"), st.just("91234567")),
                 customer_number=st.one_of(TEXT, st.just("100234")),
                 channel=st.one_of(st.sampled_from(["email", "sms"]), TEXT), flow=TEXT))
    def check(form: dict[str, str]) -> None:
        post_and_check(fuzz_app, f"/t/{NO}/forgot-pin", form, refused=_refused, tenant=NO)

    check()


# --- customer accounts: skip, invite, remove, accept ------------------------------------------


def _owned_account(app) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """The known user owns the known customer account; a delegate shares it. Returns the
    account's id, the delegate's id and another utility's account id."""
    owner = _known_user_id(app)
    delegate = _add_user(app, email="delegate@example.dk")
    with _sessions(app).begin() as db:
        account = db.query(CustomerAccount).filter_by(tenant=TENANT,
                                                      number=CUSTOMER_NUMBER).one()
        db.add(Binding(user_id=owner, customer_account_id=account.id, role="owner",
                       proof="bill_code"))
        db.add(Binding(user_id=delegate, customer_account_id=account.id, role="delegate",
                       proof="invitation", granted_by_user_id=owner))
        foreign = CustomerAccount(tenant=NO, number="100234", name="Kari Nordmann")
        db.add(foreign)
        db.flush()
        return account.id, delegate, foreign.id


def test_the_binding_skip_never_fails_and_changes_nothing_without_a_portal_login(fuzz_app):
    @FEW
    @given(_fields(flow=TEXT), SIGNED_IN)
    def check(form: dict[str, str], signed_in: bool) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/customer-accounts/skip", form, cookie=signed_in,
                       refused=lambda answer: True)

    check()


def test_the_invitation_form_never_fails_and_a_refused_invitation_changes_nothing(fuzz_app):
    account_id, delegate, foreign = _owned_account(fuzz_app)
    owner = _known_user_id(fuzz_app)

    @FEW
    @given(st.one_of(st.sampled_from([account_id, foreign]), ROW_IDS),
           _fields(email=st.one_of(TEXT, st.emails().map(str), st.just(KNOWN_EMAIL))),
           st.sampled_from(["owner", "delegate", "anonymous"]))
    def check(target: int, form: dict[str, str], who: str) -> None:
        cookies = _browser(fuzz_app, {"owner": owner, "delegate": delegate}.get(who),
                           who != "anonymous")
        post_and_check(fuzz_app, f"/t/{TENANT}/customer-accounts/{target}/invite", form,
                       cookies=cookies, refused=lambda answer: _refused(answer) or not cookies)

    check()


def test_removing_a_delegate_never_fails_and_a_refused_removal_changes_nothing(fuzz_app):
    account_id, delegate, foreign = _owned_account(fuzz_app)
    owner = _known_user_id(fuzz_app)

    @FEW
    @given(st.one_of(st.sampled_from([account_id, foreign]), ROW_IDS),
           st.one_of(st.sampled_from([delegate, owner]), ROW_IDS),
           st.sampled_from(["owner", "delegate", "anonymous"]), _fields(reason=TEXT))
    def check(target: int, user_id: int, who: str, form: dict[str, str]) -> None:
        cookies = _browser(fuzz_app, {"owner": owner, "delegate": delegate}.get(who),
                           who != "anonymous")
        post_and_check(fuzz_app, f"/t/{TENANT}/customer-accounts/{target}/remove/{user_id}",
                       form, cookies=cookies,
                       refused=lambda answer: _refused(answer) or not cookies)

    check()


def test_accepting_an_invitation_never_fails_and_a_refused_token_changes_nothing(fuzz_app):
    account_id, delegate, _ = _owned_account(fuzz_app)
    owner = _known_user_id(fuzz_app)
    invitee = _add_user(fuzz_app, email="invitee@example.dk")
    config = _config(fuzz_app)
    with _sessions(fuzz_app).begin() as db:
        link = delegation.invite(db, config.tenants[TENANT], config.public_url,
                                 db.get(User, owner), account_id, "invitee@example.dk", "da").link
    token = link.rsplit("/", 1)[1]

    @FEW
    @given(_path_token(token), st.sampled_from(["invitee", "owner", "delegate", "anonymous"]),
           _fields(accept=TEXT))
    def check(path_token: str, who: str, form: dict[str, str]) -> None:
        cookies = _browser(fuzz_app, {"invitee": invitee, "owner": owner,
                                      "delegate": delegate}.get(who), who != "anonymous")
        post_and_check(fuzz_app, f"/t/{TENANT}/invitations/{path_token}", form,
                       cookies=cookies, refused=lambda answer: _refused(answer) or not cookies)

    check()


# --- privacy: delete, consent; linked identities ----------------------------------------------


def test_the_account_deletion_form_never_fails_and_a_refused_deletion_changes_nothing(
    fuzz_app,
):
    @FEW
    @given(_fields(confirm=st.one_of(st.just("yes"), TEXT),
                 password=st.one_of(st.just(KNOWN_PASSWORD), TEXT)),
           st.sampled_from(["with_password", "without_password", "anonymous"]))
    def check(form: dict[str, str], who: str) -> None:
        user_id = _add_user(fuzz_app, password=who == "with_password")
        cookies = _browser(fuzz_app, user_id, who != "anonymous")
        post_and_check(fuzz_app, f"/t/{TENANT}/profile/delete", form, cookies=cookies,
                       refused=lambda answer: _refused(answer) or not cookies)

    check()


def test_the_privacy_consent_form_never_fails_and_only_an_acceptance_changes_a_row(fuzz_app):
    @FEW
    @given(_fields(action=st.one_of(st.sampled_from(["accept", "decline"]), TEXT),
                 flow=TEXT), SIGNED_IN)
    def check(form: dict[str, str], signed_in: bool) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/privacy/consent", form, cookie=signed_in,
                       refused=lambda answer: _refused(answer) or not signed_in
                       or form.get("action") != "accept")

    check()


def test_unlinking_an_identity_never_fails_and_a_refused_unlink_changes_nothing(fuzz_app):
    owner = _known_user_id(fuzz_app)
    other = _add_user(fuzz_app, email="other@example.dk")
    with _sessions(fuzz_app).begin() as db:
        mine = FederatedIdentity(tenant=TENANT, user_id=owner, provider="mitid",
                                 subject="mitid-mine")
        theirs = FederatedIdentity(tenant=TENANT, user_id=other, provider="mitid",
                                   subject="mitid-theirs")
        db.add_all([mine, theirs])
        db.flush()
        ids = [str(mine.id), str(theirs.id)]

    @FEW
    @given(_fields(identity_id=st.one_of(st.sampled_from(ids), TEXT,
                                       ROW_IDS.map(str))), SIGNED_IN)
    def check(form: dict[str, str], signed_in: bool) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/profile/identities", form, cookie=signed_in,
                       refused=lambda answer: _refused(answer) or not signed_in)

    check()


# --- upstream first-login steps ---------------------------------------------------------------


def _first_login(app, known_email: bool) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A MitID login with no linked account: asks for an email, or (its email is a known
    user's) for proof of that account. Returns the journey's id and its browser cookie."""
    config = _config(app)
    browser = new_token()
    identity = UpstreamIdentity(provider="mitid", subject=new_token(8), amr="mitid",
                                acr="substantial", email=KNOWN_EMAIL if known_email else None,
                                email_verified=known_email, name="Mit Person")
    with _sessions(app).begin() as db:
        step = journey.after_upstream_login(db, config.tenants[TENANT], config.hmac_key, identity,
                                            authorize_flow_id=None, required_acr=None,
                                            browser_token=browser, source=None)
        assert step.flow is not None
        return step.flow.id, browser


def test_the_first_login_steps_never_fail_and_a_refused_step_changes_nothing(fuzz_app):
    action = st.one_of(
        st.sampled_from(["email", "code", "resend", "password", "send-code", "profile"]),
        ASCII.map(lambda text: quote(text, safe="") or "x"),
    )

    @FEW
    @given(st.sampled_from(["ask_email", "prove"]), action,
           st.sampled_from(["browser", "browser", "other", "none"]), SIGNED_IN,
           st.one_of(
               _fields(email=st.one_of(TEXT, st.just(KNOWN_EMAIL), st.emails().map(str)),
                       code=st.one_of(TEXT, SIX_DIGITS),
                       password=st.one_of(TEXT, st.just(KNOWN_PASSWORD)),
                       name=TEXT, phone=TEXT),
               st.sampled_from([{"email": "new@example.dk"}, {"password": KNOWN_PASSWORD},
                                {"name": "Mit Person", "email": "new@example.dk",
                                 "phone": "+4520123456"}]),
           ))
    @example("ask_email", "email", "browser", True, {"email": "new@example.dk"})
    @example("prove", "password", "browser", True, {"password": KNOWN_PASSWORD})
    def check(scene: str, action: str, cookie: str, real_id: bool,
              form: dict[str, str]) -> None:
        flow_id, browser = _first_login(fuzz_app, known_email=scene == "prove")
        value = {"browser": browser, "other": new_token()}.get(cookie)
        path_id = flow_id if real_id else quote(new_token(), safe="")
        post_and_check(fuzz_app, f"/t/{TENANT}/first-login/{path_id}/{action}", form,
                       cookies={"upstream_browser": value} if value else None,
                       refused=_refused)

    check()


# --- OIDC: revoke, introspect, userinfo, logout ------------------------------------------------


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


CLIENT_AUTH = st.one_of(st.none(), ASCII, st.just(_basic(PORTAL, PORTAL_SECRET)),
                        st.builds(_basic, ASCII, ASCII))


def _portal_tokens(app) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """An access and a refresh token of the known user at the demo portal."""
    access, refresh, now = new_token(), new_token(), utcnow()
    with _sessions(app).begin() as db:
        db.add(Token(tenant=TENANT, client_id=PORTAL, user_id=_known_user_id(app),
                     family_id=new_token(8), access_token_sha256=sha256_hex(access),
                     refresh_token_sha256=sha256_hex(refresh), scope="openid profile email",
                     auth_time=now, access_expires_at=now + timedelta(minutes=10),
                     refresh_expires_at=now + timedelta(days=1)))
    return access, refresh


def _token_fields(access: str, refresh: str) -> st.SearchStrategy[dict[str, str]]:
    return _fields(token=st.one_of(TEXT, st.sampled_from([access, refresh])),
                 token_type_hint=st.one_of(TEXT, st.sampled_from(
                     ["access_token", "refresh_token"])),
                 client_id=st.one_of(TEXT, st.just(PORTAL)),
                 client_secret=st.one_of(TEXT, st.just(PORTAL_SECRET)))


def test_the_revocation_endpoint_never_fails_and_a_refused_request_changes_nothing(fuzz_app):
    access, refresh = _portal_tokens(fuzz_app)

    @FEW
    @given(_token_fields(access, refresh), CLIENT_AUTH)
    def check(form: dict[str, str], header: str | None) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/revoke", form, refused=_refused,
                       headers={"Authorization": header} if header else None)

    check()


def test_the_introspection_endpoint_never_fails_and_never_changes_a_row(fuzz_app):
    access, refresh = _portal_tokens(fuzz_app)

    @FEW
    @given(_token_fields(access, refresh), CLIENT_AUTH)
    def check(form: dict[str, str], header: str | None) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/introspect", form, refused=lambda answer: True,
                       headers={"Authorization": header} if header else None)

    check()


def test_the_userinfo_endpoint_never_fails_and_never_changes_a_row(fuzz_app):
    access, refresh = _portal_tokens(fuzz_app)
    header = st.one_of(st.none(), ASCII, st.sampled_from([f"Bearer {access}",
                                                          f"bearer  {access} ",
                                                          f"Bearer {refresh}"]),
                       ASCII.map(lambda text: f"Bearer {text}"))

    @FEW
    @given(_fields(access_token=st.one_of(TEXT, st.just(access)), scope=TEXT), header)
    def check(form: dict[str, str], authorization: str | None) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/userinfo", form, refused=lambda answer: True,
                       headers={"Authorization": authorization} if authorization else None)

    check()


def test_the_logout_endpoint_never_fails_and_a_refused_logout_changes_nothing(fuzz_app):
    user_id = _known_user_id(fuzz_app)
    registered = f"http://portal.test/{TENANT}/"

    @FEW
    @given(_fields(post_logout_redirect_uri=st.one_of(TEXT, st.just(registered)),
                 client_id=st.one_of(TEXT, st.just(PORTAL)),
                 id_token_hint=st.one_of(TEXT, ASCII, st.just("e30.e30.e30")),
                 state=TEXT), SIGNED_IN)
    def check(form: dict[str, str], signed_in: bool) -> None:
        post_and_check(fuzz_app, f"/t/{TENANT}/logout", form,
                       cookies=_browser(fuzz_app, user_id, signed_in), refused=_refused)

    check()


# --- the support console ----------------------------------------------------------------------


@pytest.fixture
def console_app(fuzz_app, monkeypatch):  # type: ignore[no-untyped-def]
    """The fuzz broker with two utilities' staff and customers; staff passwords hashed cheaply
    (as in test_fuzz_admin_api.py)."""
    monkeypatch.setattr(auth, "STAFF_HASHER", CHEAP_HASHER)
    dummy = CHEAP_HASHER.hash("no such staff member")
    monkeypatch.setattr(auth, "_dummy_hash", lambda: dummy)
    scene = build_scene(fuzz_app)
    with _sessions(fuzz_app).begin() as db:
        db.execute(update(Staff).values(password_hash=CHEAP_HASHER.hash(STAFF_PASSWORD)))
    return fuzz_app, scene


def _staff_cookie(app, member, kind: str = "cookie") -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"broker_staff": staff_token(app, member, kind=kind)}


def test_the_console_login_never_fails_and_a_refused_login_changes_nothing(console_app):
    app, scene = console_app

    @FEW
    @given(_fields(email=st.one_of(TEXT, st.just(scene.admin_a.email)),
                 password=st.one_of(TEXT, st.just(STAFF_PASSWORD))))
    def check(form: dict[str, str]) -> None:
        post_and_check(app, "/console/login", form, refused=_refused)

    check()


def test_the_console_totp_step_never_fails_and_a_refused_code_changes_nothing(console_app):
    app, scene = console_app

    @FEW
    @given(_fields(code=st.one_of(st.just("current"), TEXT, SIX_DIGITS)),
           st.sampled_from(["pending", "full", "garbage", "none"]))
    def check(form: dict[str, str], cookie: str) -> None:
        if form.get("code") == "current":
            form["code"] = totp_now(scene.admin_a)
        cookies: dict[str, str] = {}
        if cookie == "pending":
            with _sessions(app).begin() as db:
                _row, token = auth.start_session(db, db.get(Staff, scene.admin_a.id),
                                                 kind="cookie", stage=auth.STAGE_TOTP)
            cookies = {"broker_staff_totp": token}
        elif cookie == "full":
            cookies = {"broker_staff_totp": staff_token(app, scene.admin_a, kind="cookie")}
        elif cookie == "garbage":
            cookies = {"broker_staff_totp": new_token()}
        post_and_check(app, "/console/totp", form, cookies=cookies,
                       refused=lambda answer: _refused(answer) or _to(answer, "/login"))

    check()


def test_the_console_logout_never_fails_and_changes_nothing_without_a_session(console_app):
    app, scene = console_app

    @FEW
    @given(_fields(reason=TEXT), st.sampled_from(["live", "bearer", "garbage", "none"]))
    def check(form: dict[str, str], cookie: str) -> None:
        cookies: dict[str, str] = {}
        if cookie in ("live", "bearer"):
            cookies = _staff_cookie(app, scene.agent_a, "cookie" if cookie == "live" else "bearer")
        elif cookie == "garbage":
            cookies = {"broker_staff": new_token()}
        post_and_check(app, "/console/logout", form, cookies=cookies,
                       refused=lambda answer: cookie != "live")

    check()


def test_the_console_user_actions_never_fail_and_a_refused_action_changes_nothing(
    console_app,
):
    app, scene = console_app
    real_action = st.sampled_from(staff_actions.ACTIONS)
    action = st.one_of(real_action, real_action,
                       ASCII.map(lambda text: quote(text, safe="") or "x"))
    staff = st.sampled_from(["admin", "agent", "foreign_agent", "none"])

    @FEW
    @given(staff, st.one_of(st.sampled_from([scene.user_a, scene.user_b]), ROW_IDS), action,
           _fields(reason=st.one_of(TEXT, st.just("The customer called and asked for it")),
                 customer_number=st.one_of(TEXT, st.sampled_from(
                     [scene.account_a_number, "100 234"])),
                 role=st.one_of(TEXT, st.sampled_from(["owner", "delegate"])),
                 channel=st.one_of(TEXT, st.sampled_from(["email", "sms"]))))
    def check(who: str, user_id: int, action: str, form: dict[str, str]) -> None:
        members = {"admin": scene.admin_a, "agent": scene.agent_a,
                   "foreign_agent": scene.agent_b}
        cookies = _staff_cookie(app, members[who]) if who in members else {}
        post_and_check(app, f"/console/users/{user_id}/actions/{action}", form,
                       cookies=cookies, refused=_refused)

    check()


def test_the_console_staff_forms_never_fail_and_a_refused_change_changes_nothing(console_app):
    app, scene = console_app
    extra = add_staff(app, "extra@fjordvarme.test", ["support_agent"], [NO])
    text_list = st.lists(st.one_of(TEXT, st.sampled_from(
        ["support_agent", "tenant_admin", "super_admin", NO, TENANT])), max_size=3)

    @FEW
    @given(st.sampled_from(["admin", "agent", "none"]),
           st.one_of(st.just("create"), st.tuples(
               st.one_of(st.sampled_from([extra.id, scene.admin_a.id, scene.agent_b.id]),
                         ROW_IDS),
               st.sampled_from(["disable", "enable"]))),
           _fields(email=st.one_of(TEXT, st.emails().map(str), st.just(extra.email)),
                 name=TEXT,
                 reason=st.one_of(TEXT, st.just("New colleague in customer service"))),
           text_list, text_list)
    def check(who: str, target: Any, form: dict[str, Any], roles: list[str],
              tenants: list[str]) -> None:
        with _sessions(app).begin() as db:
            db.execute(update(Staff).values(disabled=False))
        members = {"admin": scene.admin_a, "agent": scene.agent_a}
        cookies = _staff_cookie(app, members[who]) if who in members else {}
        path = "/console/staff" if target == "create" else f"/console/staff/{target[0]}/{target[1]}"
        post_and_check(app, path, {**form, "role": roles, "tenant": tenants}, cookies=cookies,
                       refused=_refused)

    check()

