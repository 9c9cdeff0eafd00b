"""The OpenAPI 3.1 description of the admin API, built from the same action list the API serves,
so a new action appears in the document the moment it appears in the API."""

from __future__ import annotations

from typing import Any

from ..models import ROW_ID_MAX
from .actions import ACTION_LABELS, ACTIONS

JSON = "application/json"
ERROR_REF = {"$ref": "#/components/responses/Error"}


def _json_body(schema_ref: str) -> dict[str, Any]:
    return {"required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": schema or {"type": "object"}}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERROR_REF for code in codes}


ROW_ID = {"type": "integer", "minimum": 1, "maximum": ROW_ID_MAX}
USER_ID = {"name": "user_id", "in": "path", "required": True, "schema": ROW_ID}
STAFF_ID = {"name": "staff_id", "in": "path", "required": True, "schema": ROW_ID}
AUDIT_FILTERS = [
    {"name": "tenant", "in": "query", "schema": {"type": "string"}},
    {"name": "user_id", "in": "query", "schema": ROW_ID},
    {"name": "event", "in": "query", "schema": {"type": "string"}},
    {"name": "outcome", "in": "query", "schema": {"type": "string"}},
    {"name": "since", "in": "query", "description": "ISO 8601, inclusive; UTC if no zone",
     "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "description": "ISO 8601, exclusive; UTC if no zone",
     "schema": {"type": "string", "format": "date-time"}},
]
ACTION_PARAMS = {
    "bind_customer": ["customer_number", "role"],
    "unbind_customer": ["customer_number"],
    "send_binding_pin": ["customer_number", "channel"],
}


def _action_path(action: str) -> dict[str, Any]:
    needs = ACTION_PARAMS.get(action, [])
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["reason", *(["customer_number"] if "customer_number" in needs else [])],
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 1000}},
    }
    if "customer_number" in needs:
        schema["properties"]["customer_number"] = {"type": "string", "maxLength": 64}
    if "role" in needs:
        schema["properties"]["role"] = {"type": "string", "enum": ["owner", "delegate"],
                                        "default": "owner"}
    if "channel" in needs:
        schema["properties"]["channel"] = {
            "type": "string", "enum": ["email", "sms"],
            "description": "The customer account's contact on record; email when omitted "
                           "and on record, else SMS."}
    return {
        "post": {
            "operationId": action,
            "summary": ACTION_LABELS[action],
            "tags": ["actions"],
            "parameters": [USER_ID],
            "requestBody": {"required": True, "content": {JSON: {"schema": schema}}},
            "responses": {
                "200": _ok("Done; one audit record", {"$ref": "#/components/schemas/ActionResult"}),
                "400": _ok("No reason or malformed input; nothing done, nothing recorded. "
                           "A body that is not a JSON object gets the plain Error form",
                           {"anyOf": [{"$ref": "#/components/schemas/ActionResult"},
                                      {"$ref": "#/components/schemas/Error"}]}),
                "403": _ok("Not allowed for this tenant or role; the refusal is recorded",
                           {"$ref": "#/components/schemas/ActionResult"}),
                "409": _ok("The account's state does not allow it; recorded as failed",
                           {"$ref": "#/components/schemas/ActionResult"}),
                **_errors("401", "404"),
            },
        }
    }


def openapi_document(server_url: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/login": {"post": {
            "operationId": "login", "summary": "Staff login: password and TOTP code",
            "tags": ["session"], "security": [],
            "requestBody": _json_body("LoginRequest"),
            "responses": {"200": _ok("A bearer token", {"$ref": "#/components/schemas/Token"}),
                          **_errors("400", "401", "429")},
        }},
        "/logout": {"post": {
            "operationId": "logout", "summary": "End this staff session", "tags": ["session"],
            "responses": {"200": _ok("Ended"), **_errors("401")},
        }},
        "/session": {"get": {
            "operationId": "session", "summary": "Who is signed in; the CSRF token for "
            "cookie-authenticated calls", "tags": ["session"],
            "responses": {"200": _ok("The session"), **_errors("401")},
        }},
        "/users": {"get": {
            "operationId": "searchUsers",
            "summary": "Search users by email, phone, name or customer number",
            "tags": ["users"],
            "parameters": [
                {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "tenant", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": _ok("Matching users in the caller's tenants"),
                          **_errors("400", "401")},
        }},
        "/users/{user_id}": {"get": {
            "operationId": "getUser",
            "summary": "Activation, lockout, identities, customer accounts, MFA, recent events",
            "tags": ["users"], "parameters": [USER_ID],
            "responses": {"200": _ok("The user"), **_errors("401", "403", "404")},
        }},
        "/audit": {"get": {
            "operationId": "searchAudit", "summary": "Audit records, newest first",
            "tags": ["audit"],
            "parameters": [*AUDIT_FILTERS,
                           {"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "before_id", "in": "query", "schema": ROW_ID}],
            "responses": {"200": _ok("Records"), **_errors("400", "401")},
        }},
        "/audit/export": {"get": {
            "operationId": "exportAudit", "summary": "Audit records as JSON Lines, oldest first",
            "tags": ["audit"], "parameters": AUDIT_FILTERS,
            "responses": {"200": {"description": "One JSON object per line",
                                  "content": {"application/jsonl": {"schema": {"type": "string"}}}},
                          **_errors("400", "401")},
        }},
        "/staff": {
            "get": {"operationId": "listStaff", "summary": "Staff of the caller's tenants "
                    "(tenant administrators)", "tags": ["staff"],
                    "responses": {"200": _ok("Staff"), **_errors("401", "403")}},
            "post": {"operationId": "createStaff", "summary": "Add a staff member; the first "
                     "password and the TOTP URI are returned once", "tags": ["staff"],
                     "requestBody": _json_body("NewStaff"),
                     "responses": {"201": _ok("Created"),
                                   **_errors("400", "401", "403", "409")}},
        },
        "/staff/{staff_id}/disable": {"post": {
            "operationId": "disableStaff", "summary": "Disable a staff member, ending sessions",
            "tags": ["staff"], "parameters": [STAFF_ID], "requestBody": _json_body("Reason"),
            "responses": {"200": _ok("Disabled"), **_errors("400", "401", "403", "404")},
        }},
        "/staff/{staff_id}/enable": {"post": {
            "operationId": "enableStaff", "summary": "Enable a staff member again",
            "tags": ["staff"], "parameters": [STAFF_ID], "requestBody": _json_body("Reason"),
            "responses": {"200": _ok("Enabled"), **_errors("400", "401", "403", "404")},
        }},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document", "tags": ["session"],
            "security": [], "responses": {"200": _ok("OpenAPI 3.1")},
        }},
    }
    for action in ACTIONS:
        paths[f"/users/{{user_id}}/{action.replace('_', '-')}"] = _action_path(action)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Utility broker admin API",
            "version": "1",
            "description": "Support staff actions, each requiring a reason and audited once. "
                           "Authenticate with a bearer token from POST /login, or with the "
                           "console's staff cookie plus the X-CSRF-Token header.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"staffCookie": [], "csrfHeader": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "staffCookie": {"type": "apiKey", "in": "cookie", "name": "broker_staff"},
                "csrfHeader": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
            "schemas": {
                "LoginRequest": {"type": "object", "required": ["email", "password", "totp_code"],
                                 "properties": {"email": {"type": "string"},
                                                "password": {"type": "string"},
                                                "totp_code": {"type": "string"}}},
                "Token": {"type": "object", "properties": {
                    "access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                    "expires_in": {"type": "integer"}, "staff": {"type": "object"}}},
                "Reason": {"type": "object", "required": ["reason"],
                           "properties": {"reason": {"type": "string", "minLength": 1}}},
                "NewStaff": {"type": "object", "required": ["email", "roles", "tenants", "reason"],
                             "properties": {
                                 "email": {"type": "string"}, "name": {"type": "string"},
                                 "roles": {"type": "array", "items": {
                                     "enum": ["support_agent", "tenant_admin"]}},
                                 "tenants": {"type": "array", "items": {"type": "string"}},
                                 "reason": {"type": "string", "minLength": 1}}},
                "ActionResult": {"type": "object", "required": ["action", "outcome"],
                                 "properties": {
                                     "action": {"type": "string"},
                                     "outcome": {"enum": ["ok", "failed", "refused", "invalid",
                                                          "not_found"]},
                                     "error": {"type": "string"},
                                     "details": {"type": "object"}}},
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
            },
            "responses": {
                "Error": {"description": "An error code",
                          "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        },
    }
