"""What the browser tests share: the fake model's settings for their daphne, the slow counting
reply, and what a user does in the page (sign up, send, wait for a reply to stream or finish).

The browser, the live server and the fake model are fixtures, in tests/browser/conftest.py.
"""

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support.fake_openai import FakeOpenAI
from tests.support.live import ARTIFACTS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MODEL_NAME = "fake-model-for-browser-tests"
MODEL_API_KEY = "sk-browser-tests"
PASSWORD = "correct-horse-battery-staple-42"
# Replies take seconds here, so waits that span one get room to spare.
REPLY_TIMEOUT_MS = 20_000

# A slow reply in plain words whose every prefix is easy to recognise: "step 1. step 2. ..."
COUNTING_REPLY = " ".join(f"step {n}." for n in range(1, 61))
SLOW_TOKEN_SECONDS = 0.05

# Records, on every page load, each text that a streaming reply showed, by element id: the
# tests check that every one of them is a prefix of the reply (no gap, no repeat, ever).
RECORD_STREAMED_TEXT = """
window.streamedText = {};
new MutationObserver(() => {
  for (const body of document.querySelectorAll(".message-body.streaming")) {
    const seen = (window.streamedText[body.id] ||= []);
    if (seen[seen.length - 1] !== body.textContent) seen.push(body.textContent);
  }
}).observe(document, {childList: true, subtree: true, characterData: true});
"""


def server_env(fake_model: FakeOpenAI, **extra: str) -> dict[str, str]:
    """The environment of a daphne serving the browser tests, talking to the fake model."""
    return {
        "OPENAI_BASE_URL": fake_model.base_url,
        "OPENAI_API_KEY": MODEL_API_KEY,
        "OPENAI_MAX_RETRIES": "0",
        "CHAT_DEFAULT_MODEL": MODEL_NAME,
        # Titles ask the model in the background, racing the scripted replies; they have
        # tests of their own (test_live_updates).
        "CHAT_AUTO_TITLE": "0",
        **extra,
    }


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png")


def sign_up(page: Page, email: str) -> None:
    page.goto("/accounts/signup/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("form").get_by_role("button", name=re.compile("sign up", re.I)).click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".account-email")).to_have_text(email)


def send(page: Page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def latest_reply(page: Page):
    return page.locator("#message-list li.message-assistant").last


def wait_for_streaming_text(page: Page, containing: str) -> str:
    """Wait until the reply is still streaming and shows `containing`; return its text.

    One check in the page, so "still streaming" and the text are seen at the same moment.
    """
    handle = page.wait_for_function(
        """needle => {
          const body = document.querySelector(
            "#message-list li.message-assistant.status-streaming .message-body.streaming");
          return body && body.textContent && body.textContent.includes(needle)
            ? body.textContent : null;
        }""",
        arg=containing,
        timeout=REPLY_TIMEOUT_MS,
    )
    return handle.json_value()


def wait_for_status(page: Page, status: str) -> None:
    expect(latest_reply(page)).to_have_class(
        re.compile(rf"\bstatus-{status}\b"), timeout=REPLY_TIMEOUT_MS
    )


def wait_for_new_reply(page: Page, replacing: str) -> None:
    """Wait until the reply that took the place of the one with DOM id `replacing` is complete.

    After a regeneration or an edit, the reply it replaces is complete already: wait_for_status
    alone could return before the new one is even shown.
    """
    expect(latest_reply(page)).not_to_have_id(replacing, timeout=REPLY_TIMEOUT_MS)
    wait_for_status(page, "complete")


def streamed_texts(page: Page, reply_dom_id: str) -> list[str]:
    return page.evaluate("id => window.streamedText[id] || []", f"{reply_dom_id}-text")
