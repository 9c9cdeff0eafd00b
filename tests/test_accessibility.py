"""Every page a customer can open works with a keyboard and a screen reader: each visible
input has a label, error texts are tied to their fields, headings go in order, and the fields
carry the autocomplete hints password managers and phones rely on."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser

import pytest

from broker import login_session
from broker.app import create_app
from broker.models import User

from .conftest import make_config

TENANTS = ("aaro-vand", "fjordvarme", "stadsenergi", "aguas-del-valle", "norrnat")
PUBLIC_PAGES = ("/login", "/register", "/activate", "/activation/resend", "/forgot-password",
                "/forgot-pin", "/unlock/not-a-token", "/activate/not-a-token",
                "/reset-password/not-a-token", "/profile/email/not-a-token",
                "/activate/password?step=nothing", "/first-login/nothing")
SIGNED_IN_PAGES = ("/profile", "/profile/totp", "/customer-accounts", "/profile/identities",
                   "/signed-in", "/invitations/not-a-token", "/logout")
AUTOCOMPLETE = {"email": {"email", "username"}, "tel": {"tel"},
                "password": {"current-password", "new-password"}}


class PageStructure(HTMLParser):
    """What the checks need from a page: inputs, labels, ids, headings, describedby."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []
        self.label_targets: set[str] = set()
        self.ids: set[str] = set()
        self.headings: list[int] = []
        self.described: list[str] = []
        self.html_lang: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if values.get("aria-describedby"):
            self.described += (values["aria-describedby"] or "").split()
        if tag == "html":
            self.html_lang = values.get("lang")
        elif tag in ("input", "select", "textarea"):
            self.inputs.append({"tag": tag, **values})
        elif tag == "label" and values.get("for"):
            self.label_targets.add(values["for"] or "")
        elif len(tag) == 2 and tag[0] == "h" and tag[1].isdigit():
            self.headings.append(int(tag[1]))


def structure(html: str) -> PageStructure:
    parser = PageStructure()
    parser.feed(html)
    return parser


@pytest.fixture
def app(sqlite_url: str):  # type: ignore[no-untyped-def]
    application = create_app(make_config(sqlite_url, page_language=None))
    application.config["TESTING"] = True
    yield application
    application.extensions["broker"].engine.dispose()


def _signed_in_client(app, tenant_slug: str):  # type: ignore[no-untyped-def]
    tenant = app.extensions["broker"].config.tenants[tenant_slug]
    with app.extensions["broker"].sessions() as db:
        user = User(tenant=tenant_slug, subject=f"sub-{tenant_slug}", status="active",
                    email=f"anna@{tenant_slug}.example", name="Anna Berg")
        db.add(user)
        db.flush()
        _, token = login_session.start(db, tenant, user, amr=["pwd"])
        db.commit()
    client = app.test_client()
    client.set_cookie(login_session.cookie_name(tenant_slug), token, domain="localhost",
                      path=f"/t/{tenant_slug}")
    return client


@pytest.fixture(scope="module")
def pages(tmp_path_factory, sqlite_template):  # type: ignore[no-untyped-def]
    """Fetched once for the module: the checks below only read them."""
    path = tmp_path_factory.mktemp("a11y") / "broker.db"
    shutil.copy(sqlite_template, path)
    application = create_app(make_config(f"sqlite:///{path}", page_language=None))
    application.config["TESTING"] = True
    yield _pages(application)
    application.extensions["broker"].engine.dispose()


def _pages(app):  # type: ignore[no-untyped-def]
    """(url, html) of every customer page reachable with GET, in each tenant."""
    anonymous = app.test_client()
    seen = []
    for tenant in TENANTS:
        signed_in = _signed_in_client(app, tenant)
        for path, client in [(p, anonymous) for p in PUBLIC_PAGES] + \
                            [(p, signed_in) for p in SIGNED_IN_PAGES]:
            url = f"/t/{tenant}{path}"
            response = client.get(url)
            if response.status_code == 404 or response.mimetype != "text/html":
                continue  # the tenant does not offer this page (e.g. no local passwords)
            if response.status_code in (301, 302, 303):
                continue
            seen.append((url, response.get_data(as_text=True)))
    seen.append(("/", anonymous.get("/").get_data(as_text=True)))
    return seen


def test_the_page_list_covers_the_forms_customers_fill_in(pages):
    urls = {url for url, _ in pages}
    for expected in ("/t/aaro-vand/login", "/t/aaro-vand/register", "/t/fjordvarme/activate",
                     "/t/aaro-vand/profile", "/t/aaro-vand/customer-accounts",
                     "/t/stadsenergi/profile/totp", "/t/norrnat/profile/identities"):
        assert expected in urls


def test_every_visible_input_on_every_page_has_a_label(pages):
    unlabelled = []
    for url, html in pages:
        page = structure(html)
        for field in page.inputs:
            if field.get("type") in ("hidden", "submit", "button"):
                continue
            if not field.get("id") or field["id"] not in page.label_targets:
                unlabelled.append((url, field.get("name")))
    assert unlabelled == []


def test_every_aria_describedby_points_at_text_on_the_page(pages):
    dangling = []
    for url, html in pages:
        page = structure(html)
        dangling += [(url, target) for target in page.described if target not in page.ids]
    assert dangling == []


def test_headings_start_at_h1_and_never_skip_a_level(pages):
    for url, html in pages:
        levels = structure(html).headings
        assert levels and levels[0] == 1, url
        assert levels.count(1) == 1, url
        for before, after in zip(levels, levels[1:], strict=False):
            assert after <= before + 1, (url, levels)


def test_email_phone_and_password_fields_carry_autocomplete_hints(pages):
    missing = []
    for url, html in pages:
        for field in structure(html).inputs:
            wanted = AUTOCOMPLETE.get(field.get("type") or "")
            if wanted and field.get("autocomplete") not in wanted:
                missing.append((url, field.get("name"), field.get("autocomplete")))
    assert missing == []


def test_every_page_names_its_language_and_has_a_visible_focus_style(pages):
    for url, html in pages:
        assert structure(html).html_lang in ("da", "nb", "sv", "fi", "es", "en"), url
        assert ":focus-visible" in html and "outline:" in html.replace("outline: ", "outline:")


def test_a_wrong_login_ties_the_error_to_the_fields_and_announces_it(app):
    client = app.test_client()
    page = client.post("/t/aaro-vand/login", data={"email": "", "password": ""})
    html = page.get_data(as_text=True)
    parsed = structure(html)
    assert 'role="alert" id="login-error"' in html
    email = next(f for f in parsed.inputs if f.get("name") == "email")
    assert email["aria-describedby"] == "login-error" and email["aria-invalid"] == "true"


def test_registration_errors_are_announced_and_tied_to_their_field(app):
    client = app.test_client()
    page = client.post("/t/fjordvarme/register?lang=en", data={
        "name": "", "email": "not-an-email", "password": "x", "password_confirmation": "y"})
    parsed = structure(page.get_data(as_text=True))
    email = next(f for f in parsed.inputs if f.get("name") == "email")
    assert "email-error" in (email.get("aria-describedby") or "").split()
    assert email.get("aria-invalid") == "true"
    password = next(f for f in parsed.inputs if f.get("name") == "password")
    assert "password-error" in (password.get("aria-describedby") or "").split()
    assert {"email-error", "password-error"} <= parsed.ids
