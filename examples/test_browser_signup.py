"""A persona signs up through a real browser: Chromium driven by Playwright for Python (sync API).

``persona`` is the taos-persona pytest plugin's fixture: a synchronous persona,
released at the end of the test, whatever happens to it. The test signs up at
the sandbox's example app, reads the verification email in the persona's
disposable mailbox, follows its link in the browser, reads the SMS code from
the persona's rented number and completes the sign-up::

    env_file=$(mktemp)
    python -m taos_persona.sandbox --print-env > "$env_file" & sandbox_pid=$!
    until [ -s "$env_file" ]; do sleep 0.1; done; eval "$(cat "$env_file")"
    python -m pytest examples/test_browser_signup.py
    kill "$sandbox_pid"; rm -f "$env_file"

``make e2e`` sets everything up (playwright, Debian's chromium), runs it, then
runs it again and SIGKILLs it mid-sign-up to show that the sweep leaves nothing.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from taos_persona import SyncPersonaFixture

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make e2e does)")

CHROMIUM = os.environ.get("TAOS_PERSONA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def app_url() -> str:
    sandbox = os.environ.get("TAOS_PERSONA_SANDBOX")
    if not sandbox:
        pytest.skip("TAOS_PERSONA_SANDBOX is not set: eval \"$(python -m taos_persona.sandbox --print-env)\"")
    return sandbox.rstrip("/") + "/example_app"


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set TAOS_PERSONA_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: "Browser") -> Iterator["Page"]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def hold_if_asked() -> None:
    """For ``make e2e``'s crash run: say we are mid-sign-up, then wait to be SIGKILLed."""
    marker = os.environ.get("E2E_HOLD_MARKER")
    if marker:
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
        while True:
            time.sleep(0.1)


@pytest.mark.persona("browser_bella")
def test_signup_in_a_real_browser(page: "Page", persona: "SyncPersonaFixture") -> None:
    expect = sync_api.expect
    email = persona.disposable_email()
    phone = persona.sms_number()

    page.goto(app_url() + "/pages/signup")
    page.fill("#email", email.address)
    page.fill("#phone", phone.number)
    page.click("#submit")
    expect(page.locator("#sent")).to_contain_text(email.address)
    hold_if_asked()

    message = email.wait_for_message(subject="Verify your email", timeout=30)
    page.goto(message.link("/verify"))
    expect(page.locator("#verified")).to_contain_text(email.address)

    page.fill("#sms-code", phone.wait_for_code(timeout=30))
    page.click("#confirm")
    expect(page.locator("#done")).to_contain_text("sign-up is complete")
