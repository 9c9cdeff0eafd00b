"""The support console (HTML, under /console): staff login with TOTP, search, a user's page,
the audited actions, the audit log with JSON Lines export, and staff management.

Views parse the form, call ``broker.staff``, render. The audit records and state changes of a
request commit together at the end of the request.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from ..models import Staff, User
from ..staff import actions, audit_log, auth, permissions, search
from ..staff.web import (
    clear_pending_cookie,
    clear_staff_cookie,
    cookie_login,
    pending_login,
    set_pending_cookie,
    set_staff_cookie,
    source_address,
)
from ..state import current, db
from ..throttle import EMAIL, throttled

blueprint = Blueprint("console", __name__, url_prefix="/console")
audit_log.guard_append_only()

ERROR_TEXTS = {
    "reason_required": "Please write why you are taking this action.",
    "reason_too_long": "The reason is too long (at most 1000 characters).",
    "tenant_not_allowed": "You may not act on users of this utility.",
    "role_not_allowed": "Your role does not allow this action.",
    "customer_number_required": "Please give the customer number.",
    "unknown_role": "Choose the role owner or delegate.",
    "unknown_channel": "Choose email or SMS.",
    "no_such_customer_account": "There is no customer account with that number here.",
    "not_bound": "The user is not bound to that customer account.",
    "not_pending": "The account is already activated; nothing to resend.",
    "no_email": "The user has no email address.",
    "recently_sent": "A reset link was sent a moment ago; try again in a minute.",
    "account_disabled": "The account is disabled; enable it first.",
    "already_disabled": "The account is already disabled.",
    "not_disabled": "The account is not disabled.",
    "no_contact_on_record": "The customer account has no contact on record for that channel.",
    "contact_on_record_unusable": "The contact on record cannot receive messages.",
    "sms_limited": "Too many SMS to this number in the last hour; try later or use email.",
    "email_taken": "A staff member with that email exists.",
    "invalid_email": "That is not an email address.",
    "no_tenants": "Choose at least one utility.",
    "not_yourself": "You cannot change your own staff account here.",
}


@blueprint.after_request
def _commit(response: Response) -> Response:
    """Audit records (refusals too) and the idle-time extension are kept for any answer
    short of a server error."""
    session = g.get("db")
    if session is not None and response.status_code < 500:
        session.commit()
    response.headers["Cache-Control"] = "no-store"
    return response


def _staff() -> Staff:
    login = cookie_login()
    if login is None:
        abort(redirect(url_for("console.login_page")))
    return login[1]


def _render(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    login = cookie_login() if request.endpoint not in ("console.login_page",) else None
    staff = login[1] if login else None
    return render_template(
        f"console/{template}", staff=staff, errors_text=ERROR_TEXTS,
        can_manage_staff=bool(staff and permissions.can_manage_staff(staff)), **context,
    ), status


# --- Login ---------------------------------------------------------------------------------


@blueprint.get("/")
def index():  # type: ignore[no-untyped-def]
    if cookie_login() is None:
        return redirect(url_for("console.login_page"))
    return redirect(url_for("console.users"))


@blueprint.get("/login")
def login_page():  # type: ignore[no-untyped-def]
    return _render("login.html")


@blueprint.post("/login")
@throttled("login", target=EMAIL)
def login_submit():  # type: ignore[no-untyped-def]
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    if not email.strip() or not password:
        return _render("login.html", 400, error="Give your email and password.", email=email)
    session = db()
    check = auth.check_password(session, email, password, source_address=source_address())
    if check.outcome != "ok" or check.staff is None:
        message = ("Too many attempts; try again later." if check.outcome == "locked"
                   else "Wrong email or password.")
        return _render("login.html", 401, error=message, email=email)
    _row, token = auth.start_session(
        session, check.staff, kind="cookie", stage=auth.STAGE_TOTP,
        source_address=source_address(),
    )
    response = redirect(url_for("console.totp_page"))
    set_pending_cookie(response, token)
    return response


@blueprint.get("/totp")
def totp_page():  # type: ignore[no-untyped-def]
    if pending_login() is None:
        return redirect(url_for("console.login_page"))
    return _render("totp.html")


@blueprint.post("/totp")
def totp_submit():  # type: ignore[no-untyped-def]
    pending = pending_login()
    if pending is None:
        return redirect(url_for("console.login_page"))
    pending_row, staff = pending
    session = db()
    if not auth.check_totp(session, staff, request.form.get("code", ""),
                           source_address=source_address()):
        return _render("totp.html", 401, error="That code is not valid. Enter the current code.")
    auth.end_session(session, pending_row)
    _row, token = auth.start_session(
        session, staff, kind="cookie", source_address=source_address()
    )
    response = redirect(url_for("console.users"))
    clear_pending_cookie(response)
    set_staff_cookie(response, token)
    return response


@blueprint.post("/logout")
def logout():  # type: ignore[no-untyped-def]
    login = cookie_login()
    if login is not None:
        auth.end_session(db(), login[0])
    response = redirect(url_for("console.login_page"))
    clear_staff_cookie(response)
    return response


# --- Users ---------------------------------------------------------------------------------


@blueprint.get("/users")
def users():  # type: ignore[no-untyped-def]
    staff = _staff()
    query = request.args.get("q", "")
    tenant = request.args.get("tenant") or None
    found = search.search_users(db(), staff.tenants or [], query, tenant=tenant) if query else []
    return _render(
        "search.html", query=query, tenant=tenant, results=found,
        tenants=permissions.tenants_of(staff, current().config),
    )


def _user_or_404(user_id: int) -> User:
    user = db().get(User, user_id)
    if user is None:
        abort(404)
    return user


def _user_page(staff: Staff, user: User, status: int = 200, **context: Any):  # type: ignore[no-untyped-def]
    overview = search.user_overview(db(), user)
    return _render(
        "user.html", status, overview=overview, user=user,
        action_labels=actions.ACTION_LABELS,
        allowed={a: permissions.can_act(staff, a, user.tenant).allowed for a in actions.ACTIONS},
        **context,
    )


@blueprint.get("/users/<id:user_id>")
def user_page(user_id: int):  # type: ignore[no-untyped-def]
    staff = _staff()
    user = _user_or_404(user_id)
    if not permissions.can_view(staff, user.tenant).allowed:
        return _render("forbidden.html", 403)
    return _user_page(staff, user)


@blueprint.post("/users/<id:user_id>/actions/<action>")
def user_action(user_id: int, action: str):  # type: ignore[no-untyped-def]
    staff = _staff()
    if action not in actions.ACTION_EVENTS:
        abort(404)
    user = _user_or_404(user_id)
    params = {key: request.form.get(key, "") for key in ("customer_number", "role", "channel")}
    result = actions.perform(
        db(), current().config, actions.Actor(staff, source_address()), action, user_id,
        reason=request.form.get("reason"), params=params,
    )
    if result.outcome == "refused" and not permissions.can_view(staff, user.tenant).allowed:
        return _render("forbidden.html", 403)
    return _user_page(
        staff, user, result.http_status, result=result, done_action=action,
    )


# --- Audit log -----------------------------------------------------------------------------


def _audit_query() -> audit_log.AuditQuery:
    try:
        return audit_log.query_from_args(request.args)
    except ValueError:
        abort(400)


@blueprint.get("/audit")
def audit_page():  # type: ignore[no-untyped-def]
    staff = _staff()
    query = _audit_query()
    rows = audit_log.search_audit(db(), staff.tenants or [], query)
    return _render(
        "audit.html", query=query, rows=rows, args=request.args,
        tenants=permissions.tenants_of(staff, current().config),
    )


@blueprint.get("/audit/export.jsonl")
def audit_export():  # type: ignore[no-untyped-def]
    staff = _staff()
    query = _audit_query()
    lines = audit_log.export_json_lines(db(), list(staff.tenants or []), query)
    return Response(
        stream_with_context(lines), mimetype="application/jsonl",
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )


# --- Staff ---------------------------------------------------------------------------------


def _staff_page(viewer: Staff, status: int = 200, **context: Any):  # type: ignore[no-untyped-def]
    if not permissions.can_manage_staff(viewer):
        return _render("forbidden.html", 403)
    return _render(
        "staff.html", status, members=actions.visible_staff(db(), viewer),
        tenants=permissions.tenants_of(viewer, current().config), **context,
    )


@blueprint.get("/staff")
def staff_page():  # type: ignore[no-untyped-def]
    return _staff_page(_staff())


@blueprint.post("/staff")
def staff_create():  # type: ignore[no-untyped-def]
    viewer = _staff()
    result = actions.add_staff_member(
        db(), actions.Actor(viewer, source_address()),
        email=request.form.get("email", ""), name=request.form.get("name", ""),
        roles=request.form.getlist("role"), tenants=request.form.getlist("tenant"),
        reason=request.form.get("reason"),
    )
    if result.outcome == "refused" and not permissions.can_manage_staff(viewer):
        return _render("forbidden.html", 403)
    return _staff_page(viewer, result.http_status, result=result)


@blueprint.post("/staff/<id:staff_id>/<any(disable, enable):change>")
def staff_change(staff_id: int, change: str):  # type: ignore[no-untyped-def]
    viewer = _staff()
    result = actions.set_staff_disabled(
        db(), actions.Actor(viewer, source_address()), staff_id,
        disabled=change == "disable", reason=request.form.get("reason"),
    )
    if result.outcome == "refused" and not permissions.can_manage_staff(viewer):
        return _render("forbidden.html", 403)
    return _staff_page(viewer, result.http_status, result=result)


def register_staff_views(app: Any) -> None:
    """The console and the admin API (kept a top-level blueprint named ``admin_api``, which
    the app's form-CSRF check exempts: the API checks its own header instead)."""
    from .admin_api import blueprint as admin_api_blueprint

    app.register_blueprint(blueprint)
    app.register_blueprint(admin_api_blueprint)
