"""The pages, the chat with its websocket and the admin work under the Content Security Policy
in a real browser, with no violation reported (the policy itself: tests/test_deployment.py)."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from playwright.sync_api import expect, sync_playwright

from accounts.models import User
from tests.support.browser import CHROMIUM_ARGS, REPLY_TIMEOUT_MS
from tests.support.live import Daphne
from tests.support.visitors import PASSWORD

# Recorded on every page: each Content Security Policy violation the browser reports.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", event => {
  window.cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def signed_in_sessions(alice: User) -> dict[str, str]:
    """Session keys of Alice and of a superuser, made before the browser starts (Playwright
    runs an event loop in this thread, under which the ORM refuses to work)."""
    sessions = {}
    for name, user in {
        "alice": alice,
        "staff": User.objects.create_superuser("staff@example.com", PASSWORD),
    }.items():
        client = Client()
        client.force_login(user)
        sessions[name] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return sessions


@pytest.fixture
def browser_server(chromium_path: Path) -> Iterator[Daphne]:
    if not (Path(settings.STATIC_ROOT) / "staticfiles.json").exists():
        pytest.fail("Static files are not collected: run `python3 dev.py test`")
    # The offline model, quick: the reply streams over the websocket in a moment.
    with Daphne("csp-browser", CHAT_OFFLINE_TOKEN_DELAY="0.002", CHAT_AUTO_TITLE="0") as server:
        yield server


@pytest.mark.django_db(transaction=True)
def test_the_chat_and_the_admin_work_in_a_browser_without_a_policy_violation(
    signed_in_sessions: dict[str, str], browser_server: Daphne, chromium_path: Path
) -> None:
    table = "| left | right |\n|:--|--:|\n| a | 1 |"
    reports: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )

        def visitor(session: str | None):
            context = browser.new_context(base_url=browser_server.url)
            context.set_default_timeout(15_000)
            context.add_init_script(RECORD_VIOLATIONS)
            if session:
                context.add_cookies(
                    [
                        {
                            "name": settings.SESSION_COOKIE_NAME,
                            "value": session,
                            "url": browser_server.url,
                        }
                    ]
                )
            page = context.new_page()
            page.on("console", lambda message: reports.append(message.text))
            return page

        def leave(page) -> None:
            reports.extend(page.evaluate("window.cspViolations"))

        alice = visitor(signed_in_sessions["alice"])
        response = alice.goto("/")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        alice.fill("#composer-input", table)
        alice.press("#composer-input", "Enter")
        expect(alice).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"), timeout=REPLY_TIMEOUT_MS)
        conversation_id = re.search(r"/c/([0-9a-f-]{36})/", alice.url)[1]
        finished_replies = alice.locator("#message-list li.message-assistant.status-complete")
        expect(finished_replies).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
        # A regenerated reply reaches the page over the websocket only.
        alice.get_by_role("button", name="Regenerate").click()
        expect(alice.locator("#message-list .message-versions summary")).to_have_text(
            "1 earlier version", timeout=REPLY_TIMEOUT_MS
        )
        expect(finished_replies).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
        right_cell = alice.locator("#message-list li.message-user td").nth(1)
        assert right_cell.evaluate("cell => getComputedStyle(cell).textAlign") == "right"
        assert alice.locator("head style").count() == 0
        leave(alice)
        for path in [reverse("account_email"), reverse("account_change_password")]:
            alice.goto(path)
            leave(alice)

        staff = visitor(signed_in_sessions["staff"])
        for path in [
            reverse("admin:conversations_conversation_changelist"),
            reverse("admin:conversations_conversation_change", args=[conversation_id]),
            reverse("admin:conversations_message_changelist"),
        ]:
            staff.goto(path)
            expect(staff.locator("#content")).to_be_visible()
            leave(staff)

        anonymous = visitor(None)
        for path in [reverse("account_login"), reverse("account_signup"), "/no/such/page/"]:
            anonymous.goto(path)
            leave(anonymous)
        browser.close()

    violations = [report for report in reports if "Content Security Policy" in report]
    violations += [report for report in reports if " blocked " in report]
    assert violations == []
