"""The emulator's login page: pick a test person (or edit one) and consent."""

from __future__ import annotations

from flask import render_template_string

from .personas import Persona
from .state import AuthRequest

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ kind }} emulator</title>
<style>body{font-family:sans-serif;max-width:40rem;margin:2rem auto}
fieldset{margin:1rem 0}label{display:block;margin:.3rem 0}</style></head>
<body>
<h1>{{ kind }} emulator{% if request.dialect %} ({{ request.dialect }}){% endif %}</h1>
<p>Development only. <strong>{{ request.client_id }}</strong> asks to know who you are
{%- if request.loa_requested %} at level <strong>{{ request.loa_requested }}</strong>{% endif %}
(scopes: {{ request.scopes|sort|join(" ") }}).</p>
<form method="post" action="{{ action }}">
<input type="hidden" name="request_id" value="{{ request_id }}">
<fieldset><legend>Test person</legend>
{% for persona in personas %}
<label><input type="radio" name="persona" value="{{ persona.key }}"
{%- if loop.first %} checked{% endif %}> {{ persona.label }}</label>
{% endfor %}
</fieldset>
<fieldset><legend>Change the person (blank keeps the preset)</legend>
<label>Name <input name="name"></label>
<label>Email <input name="email" type="email"></label>
<label>CPR / hetu <input name="national_id"></label>
<label>Stable id (uuid) <input name="uuid"></label>
<label>Birth date <input name="birthdate" placeholder="YYYY-MM-DD"></label>
<label>Level of assurance <select name="loa"><option value="">(preset)</option>
<option>low</option><option>substantial</option><option>high</option></select></label>
</fieldset>
<button name="action" value="consent">Log in and share these details</button>
<button name="action" value="cancel">Cancel</button>
</form></body></html>"""

ERROR_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Emulator: bad request</title></head><body><h1>The request was refused</h1>
<p>{{ message }}</p></body></html>"""


def login_page(kind: str, request: AuthRequest, request_id: str, personas: list[Persona],
               action: str) -> str:
    return render_template_string(LOGIN_PAGE, kind=kind, request=request,
                                  request_id=request_id, personas=personas, action=action)


def error_page(message: str) -> str:
    return render_template_string(ERROR_PAGE, message=message)
