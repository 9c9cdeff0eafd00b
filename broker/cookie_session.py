"""Flask's signed cookie session, with its signing serializer built once instead of per request.

Flask builds a new ``URLSafeTimedSerializer`` (and its signer) at the start of every request,
to read a session cookie most requests (token, JWKS, health) do not even carry. The secret key
is fixed for the life of the process, so one serializer serves every request; it holds no
per-request state, so the request threads may share it.
"""

from __future__ import annotations

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


class CachedSerializerSessionInterface(SecureCookieSessionInterface):
    def __init__(self) -> None:
        self._serializers: dict[tuple[object, ...], URLSafeTimedSerializer | None] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        fallbacks = tuple(app.config.get("SECRET_KEY_FALLBACKS") or ())
        key = (id(app), app.secret_key, fallbacks)
        if key not in self._serializers:
            self._serializers[key] = super().get_signing_serializer(app)
        return self._serializers[key]
