"""The JSON admin API under /admin/api/v1: the console's search, user view, actions, audit log
and staff management for scripts and help-desk tools. Described at /admin/api/v1/openapi.json.

Authentication: ``POST /login`` with email, password and a TOTP code returns a bearer token
(30 minutes idle, at most 10 hours). A browser already signed in to the console may use its
staff cookie instead; then every state-changing call must also send ``X-CSRF-Token`` (from
``GET /session``), since the global form CSRF check does not cover JSON calls.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from ..models import Staff, StaffSession, User
from ..security import digests_match
from ..staff import actions, audit_log, auth, permissions, search
from ..staff.openapi import openapi_document
from ..staff.web import COOKIE, bearer_login, cookie_login, source_address
from ..state import current, db
from ..throttle import throttled

PREFIX = "/admin/api/v1"
blueprint = Blueprint("admin_api", __name__, url_prefix=PREFIX)
audit_log.guard_append_only()
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _error(status: int, error: str, **extra: Any) -> Response:
    response = jsonify({"error": error, **extra})
    response.status_code = status
    return response


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException):  # type: ignore[no-untyped-def]
    if isinstance(getattr(error, "response", None), Response):
        return error.response
    name = (error.name or "error").lower().replace(" ", "_")
    return _error(error.code or 500, name)


@blueprint.app_errorhandler(404)
@blueprint.app_errorhandler(405)
def _unrouted(error: HTTPException):  # type: ignore[no-untyped-def]
    """A path under the API that matches no route (an id that is not a number, say) is still
    answered in JSON, as the document promises; elsewhere the usual page."""
    if request.path.startswith(PREFIX + "/"):
        return _http_error(error)
    return error.get_response()


@blueprint.after_request
def _commit(response: Response) -> Response:
    session = g.get("db")
    if session is not None and response.status_code < 500:
        session.commit()
    response.headers["Cache-Control"] = "no-store"
    return response


def _authenticated() -> tuple[StaffSession, Staff]:
    """The caller's staff session: bearer token first, else the console cookie (+ CSRF)."""
    login = bearer_login()
    if login is not None:
        return login
    if request.headers.get("Authorization"):
        abort(_error(401, "invalid_token"))
    login = cookie_login()
    if login is None:
        abort(_error(401, "login_required"))
    if request.method not in SAFE_METHODS:
        expected = auth.csrf_token_for(current().config.secret_key, request.cookies[COOKIE])
        if not digests_match(request.headers.get("X-CSRF-Token"), expected):
            abort(_error(403, "csrf_token_missing_or_wrong"))
    return login


def _staff() -> Staff:
    return _authenticated()[1]


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(_error(400, "json_object_required"))
    return data


# --- Login ---------------------------------------------------------------------------------


@blueprint.post("/login")
@throttled("login")  # per address: the JSON body has no form field to count per email
def login():  # type: ignore[no-untyped-def]
    data = _body()
    email, password = str(data.get("email") or ""), str(data.get("password") or "")
    code = str(data.get("totp_code") or "")
    if not email or not password or not code:
        return _error(400, "email_password_and_totp_code_required")
    session = db()
    check = auth.check_password(session, email, password, source_address=source_address())
    if check.outcome != "ok" or check.staff is None:
        return _error(429 if check.outcome == "locked" else 401, f"login_{check.outcome}")
    if not auth.check_totp(session, check.staff, code, source_address=source_address()):
        return _error(401, "login_invalid")
    _row, token = auth.start_session(
        session, check.staff, kind="bearer", source_address=source_address()
    )
    return jsonify({
        "access_token": token, "token_type": "Bearer",
        "expires_in": int(auth.IDLE_TIMEOUT.total_seconds()),
        "staff": permissions.staff_json(check.staff),
    })


@blueprint.post("/logout")
def logout():  # type: ignore[no-untyped-def]
    row, _staff_member = _authenticated()
    auth.end_session(db(), row)
    return jsonify({"ok": True})


@blueprint.get("/session")
def session_info():  # type: ignore[no-untyped-def]
    row, staff = _authenticated()
    body: dict[str, Any] = {
        "staff": permissions.staff_json(staff),
        "tenants": permissions.tenants_of(staff, current().config),
        "idle_until": row.idle_until.isoformat(),
        "expires_at": row.expires_at.isoformat(),
    }
    if row.kind == "cookie":
        body["csrf_token"] = auth.csrf_token_for(
            current().config.secret_key, request.cookies[COOKIE]
        )
    return jsonify(body)


# --- Users ---------------------------------------------------------------------------------


@blueprint.get("/users")
def users():  # type: ignore[no-untyped-def]
    staff = _staff()
    query = request.args.get("q", "")
    if not query.strip():
        return _error(400, "q_required")
    found = search.search_users(
        db(), staff.tenants or [], query, tenant=request.args.get("tenant") or None
    )
    return jsonify({"users": [search.user_json(user) for user in found]})


@blueprint.get("/users/<id:user_id>")
def user(user_id: int):  # type: ignore[no-untyped-def]
    staff = _staff()
    found = db().get(User, user_id)
    if found is None:
        return _error(404, "no_such_user")
    if not permissions.can_view(staff, found.tenant).allowed:
        return _error(403, "tenant_not_allowed")
    return jsonify(search.user_overview(db(), found).as_json())


def _action_view(action: str):  # type: ignore[no-untyped-def]
    def view(user_id: int):  # type: ignore[no-untyped-def]
        staff = _staff()
        data = _body()
        params = {key: data.get(key) for key in ("customer_number", "role", "channel")}
        result = actions.perform(
            db(), current().config, actions.Actor(staff, source_address()), action, user_id,
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            params=params,
        )
        body: dict[str, Any] = {"action": action, "outcome": result.outcome,
                                "details": result.details}
        if result.error:
            body["error"] = result.error
        response = jsonify(body)
        response.status_code = result.http_status
        return response

    view.__name__ = f"action_{action}"
    return view


for _action in actions.ACTIONS:
    blueprint.add_url_rule(
        f"/users/<id:user_id>/{_action.replace('_', '-')}", view_func=_action_view(_action),
        methods=["POST"],
    )


# --- Audit log -----------------------------------------------------------------------------


def _audit_query() -> audit_log.AuditQuery:
    try:
        return audit_log.query_from_args(request.args)
    except ValueError:
        abort(_error(400, "invalid_filter"))


@blueprint.get("/audit")
def audit():  # type: ignore[no-untyped-def]
    staff = _staff()
    query = _audit_query()
    try:
        limit = max(1, min(int(request.args.get("limit", audit_log.PAGE_SIZE)), 1000))
        before_id = request.args.get("before_id")
        before = audit_log.parse_row_id(before_id) if before_id else None
    except ValueError:
        return _error(400, "invalid_filter")
    rows = audit_log.search_audit(db(), staff.tenants or [], query, limit=limit,
                                  before_id=before)
    return jsonify({"events": [search.event_json(row) for row in rows]})


@blueprint.get("/audit/export")
def audit_export():  # type: ignore[no-untyped-def]
    staff = _staff()
    query = _audit_query()
    lines = audit_log.export_json_lines(db(), list(staff.tenants or []), query)
    return Response(stream_with_context(lines), mimetype="application/jsonl")


# --- Staff ---------------------------------------------------------------------------------


@blueprint.get("/staff")
def staff_list():  # type: ignore[no-untyped-def]
    viewer = _staff()
    if not permissions.can_manage_staff(viewer):
        return _error(403, "role_not_allowed")
    members = actions.visible_staff(db(), viewer)
    return jsonify({"staff": [permissions.staff_json(member) for member in members]})


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        abort(_error(400, "list_of_strings_required"))
    return value


@blueprint.post("/staff")
def staff_create():  # type: ignore[no-untyped-def]
    viewer = _staff()
    data = _body()
    result = actions.add_staff_member(
        db(), actions.Actor(viewer, source_address()),
        email=str(data.get("email") or ""), name=str(data.get("name") or ""),
        roles=_string_list(data.get("roles", [])), tenants=_string_list(data.get("tenants", [])),
        reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
    )
    if result.created is None:
        return _error(result.http_status, result.error)
    response = jsonify({
        "staff": permissions.staff_json(result.created.staff),
        "password": result.created.password, "totp_uri": result.created.totp_uri,
    })
    response.status_code = 201
    return response


def _staff_change(staff_id: int, disabled: bool):  # type: ignore[no-untyped-def]
    viewer = _staff()
    data = _body()
    result = actions.set_staff_disabled(
        db(), actions.Actor(viewer, source_address()), staff_id, disabled=disabled,
        reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
    )
    if result.staff is None or result.outcome != "ok":
        return _error(result.http_status, result.error)
    return jsonify({"staff": permissions.staff_json(result.staff)})


@blueprint.post("/staff/<id:staff_id>/disable")
def staff_disable(staff_id: int):  # type: ignore[no-untyped-def]
    return _staff_change(staff_id, True)


@blueprint.post("/staff/<id:staff_id>/enable")
def staff_enable(staff_id: int):  # type: ignore[no-untyped-def]
    return _staff_change(staff_id, False)


@blueprint.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(openapi_document(current().config.public_url.rstrip("/") + PREFIX))
