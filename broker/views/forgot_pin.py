"""Forgot customer number / PIN (seed 001 "Glemt Kundenummer og/eller PIN?").

The person types the email and/or mobile number on record (and optionally the customer
number) and presses "send by email" or "send by SMS". The flow sends the numbers with fresh
PINs only to a contact that matches the register; this page answers the same either way, so it
cannot be used to find out who is a customer. Only input that cannot be a contact at all is
shown as an error on its field.
"""

from __future__ import annotations

import time

from flask import Blueprint, abort, render_template, request

from flows.forgot_pin import request_customer_number_and_pin

from ..config import TenantConfig
from ..state import current, db
from ..throttle import CONTACT, throttled
from .tenancy import source_address, tenant_or_404

blueprint = Blueprint("forgot_pin", __name__, url_prefix="/t/<tenant>")

FIELDS = ("email", "phone", "customer_number")
# Which field an input error belongs to, so the message sits next to what must be corrected.
ERROR_FIELD = {"invalid_email": "email", "invalid_phone": "phone", "unknown_channel": "channel"}


def _pin_tenant(slug: str) -> TenantConfig:
    """Only a tenant that accepts the PIN as a binding proof sends PINs."""
    tenant = tenant_or_404(slug)
    if "pin" not in tenant.binding.proofs:
        abort(404)
    return tenant


def _form_page(tenant: TenantConfig, status: int = 200, *, form: dict[str, str] | None = None,
               error: str = ""):  # type: ignore[no-untyped-def]
    errors = {ERROR_FIELD[error]: error} if error else {}
    return render_template(
        "customers/forgot_pin.html", tenant=tenant, form=form or {}, errors=errors,
        flow_id=request.values.get("flow", ""),
    ), status


@blueprint.get("/forgot-pin")
def forgot_pin_page(tenant: str):  # type: ignore[no-untyped-def]
    return _form_page(_pin_tenant(tenant))


# The answer to a contact on record costs more (new PINs, a message written) than to a
# stranger's: every answer waits until this much time has passed, so that its time says
# nothing about whose contact it was (a review measured 8.6 against 4.6 ms).
EVEN_ANSWER_SECONDS = 0.05


@blueprint.post("/forgot-pin")
@throttled("forgot_pin", target=CONTACT)
def forgot_pin_submit(tenant: str):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        return _forgot_pin_answer(tenant)
    finally:
        time.sleep(max(0.0, EVEN_ANSWER_SECONDS - (time.monotonic() - started)))


def _forgot_pin_answer(tenant: str):  # type: ignore[no-untyped-def]
    tenant_config = _pin_tenant(tenant)
    form = {name: request.form.get(name, "") for name in FIELDS}
    config = current().config
    session = db()
    result = request_customer_number_and_pin(
        session, tenant_config, config.hmac_key,
        channel=request.form.get("channel", ""),
        email=form["email"], phone=form["phone"], customer_number=form["customer_number"],
        locale=tenant_config.default_locale, source_address=source_address(),
        sms_limits=config.messaging.sms,
    )
    if not result.ok:
        session.rollback()
        return _form_page(tenant_config, 400, form=form, error=result.error)
    session.commit()  # the new PIN digests and the message are saved together
    return render_template(
        "customers/forgot_pin_sent.html", tenant=tenant_config, channel=result.channel,
        flow_id=request.values.get("flow", ""),
    )
