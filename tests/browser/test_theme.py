"""The colour theme in a real browser: switched at once, remembered by the server, following the
device when set to "System", and a plain form without JavaScript."""

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import screenshot, sign_up
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

LIGHT_BACKGROUND = "rgb(255, 255, 255)"
DARK_BACKGROUND = "rgb(23, 24, 27)"  # --bg of the dark theme, #17181b


def background(page: Page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def test_the_theme_switches_at_once_and_the_server_remembers_it(
    browser: Browser, chat_server: str, model: FakeOpenAI
) -> None:
    context = browser.new_context(
        base_url=chat_server, viewport={"width": 1100, "height": 800}, color_scheme="light"
    )
    page = context.new_page()
    sign_up(page, "ada@example.com")
    assert background(page) == LIGHT_BACKGROUND
    expect(page.locator("html")).to_have_attribute("data-theme", "system")

    with page.expect_response(re.compile(r"/theme/$")) as posted:
        page.get_by_role("button", name="Dark").click()

    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert background(page) == DARK_BACKGROUND
    expect(page.get_by_role("button", name="Dark")).to_have_attribute("aria-pressed", "true")
    screenshot(page, "comfort-dark")
    assert posted.value.status == 204
    # Remembered by the server: a new page is dark from its first byte, with no script.
    response = page.goto("/usage/")
    assert '<html lang="en" data-theme="dark">' in response.text()
    assert background(page) == DARK_BACKGROUND

    # "System" follows the device again, whichever it prefers.
    page.get_by_role("button", name="System").click()
    assert background(page) == LIGHT_BACKGROUND
    page.emulate_media(color_scheme="dark")
    assert background(page) == DARK_BACKGROUND
    # "Light" wins over a dark device.
    with page.expect_response(re.compile(r"/theme/$")):
        page.get_by_role("button", name="Light").click()
    assert background(page) == LIGHT_BACKGROUND
    screenshot(page, "comfort-light-on-a-dark-device")
    page.reload()
    assert background(page) == LIGHT_BACKGROUND
    context.close()


def test_without_javascript_the_theme_is_a_form_that_comes_back(
    browser: Browser, chat_server: str, model: FakeOpenAI
) -> None:
    context = browser.new_context(base_url=chat_server, color_scheme="light")
    page = context.new_page()
    sign_up(page, "grace@example.com")
    cookies = context.cookies()
    plain = browser.new_context(
        base_url=chat_server, java_script_enabled=False, color_scheme="light"
    )
    plain.add_cookies(cookies)
    page = plain.new_page()
    page.goto("/usage/")

    page.get_by_role("button", name="Dark").click()

    expect(page).to_have_url(re.compile(r"/usage/$"))
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert background(page) == DARK_BACKGROUND
    plain.close()
    context.close()
