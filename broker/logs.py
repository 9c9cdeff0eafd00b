"""JSON logs with a request id: one object per line, ids only, never personal data."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Libraries whose DEBUG lines print secrets: authlib logs every token it issues ("Issue token
# {...}"), urllib3 every URL it fetches (an upstream callback's code). Held at INFO.
QUIET_LIBRARIES = ("authlib", "urllib3")
_QUERY = re.compile(r"\?[^\s\"]*")
_TOKEN_SEGMENT = re.compile(r"/[A-Za-z0-9_.~%-]{20,}")
_EMAIL = re.compile(r"[^\s/?&=\"]+(@|%40)[^\s/?&=\"]+")


def redact_url(text: str) -> str:
    """A request line or URL without what may be personal or secret: the query string (email
    in ``/activate?email=``), long random path segments (link tokens) and email addresses."""
    text = _QUERY.sub("?[redacted]", text)
    text = _TOKEN_SEGMENT.sub("/[redacted]", text)
    return _EMAIL.sub("[email]", text)


class RequestLineFilter(logging.Filter):
    """werkzeug's access lines carry the whole URL; keep the method, path shape and status."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line. Email addresses are cut out of every text in it: the message,
    string fields and tracebacks quote what others wrote (a mail server's refusal names its
    recipient), and the logs promise none (PRIVACY.md)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _without_emails(record.getMessage()),
        }
        if has_request_context() and "request_id" in g:
            entry["request_id"] = g.request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = _without_emails(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = _without_emails(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def _without_emails(text: str) -> str:
    return _EMAIL.sub("[email]", text) if "@" in text or "%40" in text else text


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.WARNING)
    if not any(isinstance(f, RequestLineFilter) for f in werkzeug.filters):
        werkzeug.addFilter(RequestLineFilter())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO)
    # The dev outbox's SMTP catcher (aiosmtpd) logs every connection, including its own
    # readiness probe at start-up; only its warnings matter.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
