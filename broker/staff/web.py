"""The staff session cookie and bearer token, shared by the console and the admin API.

The cookie is HttpOnly, SameSite=Strict and exists only under ``/console`` and ``/admin`` (set
once per path), so no customer-facing page ever receives it. Its value is a random token; the
database keeps the SHA-256 and enforces the idle and absolute limits.
"""

from __future__ import annotations

from flask import Response, g, request

from ..models import Staff, StaffSession
from ..state import current, db
from .auth import STAGE_FULL, STAGE_TOTP, load_session

COOKIE = "broker_staff"
PENDING_COOKIE = "broker_staff_totp"
COOKIE_PATHS = ("/console", "/admin")


def _secure() -> bool:
    return current().config.public_url.startswith("https://")


def set_staff_cookie(response: Response, token: str) -> None:
    for path in COOKIE_PATHS:
        response.set_cookie(
            COOKIE, token, path=path, secure=_secure(), httponly=True, samesite="Strict"
        )


def clear_staff_cookie(response: Response) -> None:
    for path in COOKIE_PATHS:
        response.delete_cookie(
            COOKIE, path=path, secure=_secure(), httponly=True, samesite="Strict"
        )


def set_pending_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        PENDING_COOKIE, token, path="/console", secure=_secure(), httponly=True,
        samesite="Strict", max_age=300,
    )


def clear_pending_cookie(response: Response) -> None:
    response.delete_cookie(
        PENDING_COOKIE, path="/console", secure=_secure(), httponly=True, samesite="Strict"
    )


def pending_login() -> tuple[StaffSession, Staff] | None:
    """The staff member who gave the right password and still owes a TOTP code."""
    return load_session(db(), request.cookies.get(PENDING_COOKIE), kind="cookie",
                        stage=STAGE_TOTP)


def cookie_login() -> tuple[StaffSession, Staff] | None:
    """The console session of this browser (cached for the request)."""
    if "staff_cookie_login" not in g:
        g.staff_cookie_login = load_session(
            db(), request.cookies.get(COOKIE), kind="cookie", stage=STAGE_FULL
        )
    return g.staff_cookie_login


def bearer_login() -> tuple[StaffSession, Staff] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return load_session(db(), token.strip(), kind="bearer", stage=STAGE_FULL)


def source_address() -> str | None:
    return request.remote_addr
