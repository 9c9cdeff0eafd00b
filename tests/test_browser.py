"""What a customer clicks through, in headless Chromium (Debian's package): sign up, activate
from the dev outbox, bind a customer account, land in the portal. Screenshots are kept in
test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .stack import demo_stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "Hav-Vand-2026!x"

if CHROMIUM is None:
    if IN_CI:
        raise RuntimeError("CI=true but Chromium is not installed (apt-get install chromium)")
    pytest.skip("Chromium is not installed here (python3 dev.py test installs it as root)",
                allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )
        yield chromium
        chromium.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _wait_for_mail(stack, to: str, page) -> str:
    for _ in range(100):
        mails = [m for m in stack.mailbag.all() if m.to == to]
        if mails:
            return mails[0].text
        page.wait_for_timeout(100)
    raise AssertionError(f"no email to {to} arrived in the dev outbox")


def _register(page, email: str, **extra: str) -> None:
    page.click("a[href*='/register']")
    page.fill("input[name=name]", "Test Kunde")
    page.fill("input[name=email]", email)
    for name, value in extra.items():
        page.fill(f"input[name={name}]", value)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_confirmation]", PASSWORD)
    page.check("input[name=privacy]")
    page.click("form[action*='/register'] button[type=submit]")


def test_danish_signup_with_activation_link_then_bill_code_binding(browser, sqlite_url, tmp_path):
    with demo_stack(sqlite_url, tmp_path) as stack:
        context = browser.new_context(locale="da-DK")
        page = context.new_page()
        page.goto(f"{stack.portal_url}/aaro-vand/")
        page.click("#login")
        assert page.get_attribute("html", "lang") == "da"
        _shot(page, "aaro-vand-1-login")
        _register(page, "mette.browser@example.dk")
        _shot(page, "aaro-vand-2-check-email")

        _wait_for_mail(stack, "mette.browser@example.dk", page)
        page.goto(stack.outbox_url)
        _shot(page, "aaro-vand-3-dev-outbox")
        page.click("a[href*='/activate/']")
        page.click("form button[type=submit]")
        _shot(page, "aaro-vand-4-activated")
        page.click("a.button")
        page.fill("input[name=email]", "mette.browser@example.dk")
        page.fill("input[name=password]", PASSWORD)
        page.click("form[action*='/login'] button[type=submit]")
        if "/customer-accounts" not in page.url:  # the link was opened outside the portal's flow
            page.goto(f"{stack.portal_url}/aaro-vand/")
            page.click("#login")
        page.fill("input[name=customer_number]", "4500456")
        page.fill("input[name=proof_value]", "P3M-8810")
        _shot(page, "aaro-vand-5-bind")
        page.click("form[action*='/customer-accounts'] button[type=submit]")
        page.wait_for_selector("#customer-accounts")
        _shot(page, "aaro-vand-6-portal")
        assert "4500456" in page.inner_text("#customer-accounts")
        context.close()


def test_norwegian_signup_with_customer_number_and_pin_then_emailed_code(browser, sqlite_url,
                                                                          tmp_path):
    with demo_stack(sqlite_url, tmp_path) as stack:
        context = browser.new_context(locale="nb-NO")
        page = context.new_page()
        page.goto(f"{stack.portal_url}/fjordvarme/")
        page.click("#login")
        assert page.get_attribute("html", "lang") == "nb"
        _register(page, "ola.browser@example.no", customer_number="700102", proof_value="9090")
        _shot(page, "fjordvarme-1-check-email")
        text = _wait_for_mail(stack, "ola.browser@example.no", page)
        code = re.search(r"\b(\d{6})\b", text).group(1)
        page.fill("input[name=code]", code)
        page.click("form[action*='/activate'] button[type=submit]")
        page.wait_for_selector("#customer-accounts")
        _shot(page, "fjordvarme-2-portal")
        assert "700102" in page.inner_text("#customer-accounts")
        context.close()
