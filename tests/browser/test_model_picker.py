"""Choosing a model in a real browser: the picker on the new-chat page and in a conversation's
settings, against two fake providers configured through a providers file, served by daphne."""

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, expect

from conversations.llm.providers import choice_value
from tests.support.browser import REPLY_TIMEOUT_MS, latest_reply, send, sign_up, wait_for_status
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import ARTIFACTS, Daphne
from tests.support.providers import LOCAL_MODELS, ROUTER_KEY, ROUTER_MODELS, providers_toml

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def fake_providers() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    with (
        FakeOpenAI(models=LOCAL_MODELS) as local,
        FakeOpenAI(models=ROUTER_MODELS, api_key=ROUTER_KEY) as router,
    ):
        yield local, router


@pytest.fixture(scope="module")
def settings_server(
    django_db_setup: None,
    chromium_path: Path,
    fake_providers: tuple[FakeOpenAI, FakeOpenAI],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    if not (Path(settings.STATIC_ROOT) / "staticfiles.json").exists():
        pytest.fail("Static files are not collected: run `python3 dev.py test`")
    file = tmp_path_factory.mktemp("providers") / "providers.toml"
    file.write_text(providers_toml(*fake_providers))
    env = {
        "CHAT_PROVIDERS_FILE": str(file),
        "ROUTER_TEST_KEY": ROUTER_KEY,
        "OPENAI_MAX_RETRIES": "0",
        "CHAT_AUTO_TITLE": "0",
    }
    with Daphne("browser-settings", **env) as server:
        yield server.url


@pytest.fixture
def open_page(browser: Browser, settings_server: str) -> Callable[..., Page]:
    def open_(color_scheme: str = "light") -> Page:
        context = browser.new_context(
            base_url=settings_server,
            viewport={"width": 1100, "height": 800},
            color_scheme=color_scheme,
        )
        context.set_default_timeout(10_000)
        return context.new_page()

    return open_


@pytest.fixture
def providers_now(fake_providers: tuple[FakeOpenAI, FakeOpenAI]) -> tuple[FakeOpenAI, FakeOpenAI]:
    for server in fake_providers:
        server.reset()
    return fake_providers


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"settings-{name}.png")


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_choosing_a_model_sends_to_it_and_the_reply_says_which_answered(
    open_page, providers_now, color_scheme: str
):
    local, router = providers_now
    router.script(Reply(text="Ahoy from the router."))
    local.script(Reply(text="Hello from the local model."))
    page = open_page(color_scheme)
    sign_up(page, f"picker-{color_scheme}@example.com")

    # The new-chat page: settings chosen before the first message.
    page.locator("#conversation-settings > summary").click()
    picker = page.locator("#settings-model")
    expect(picker.locator("optgroup[label='Router'] option")).to_have_text(list(ROUTER_MODELS))
    expect(picker.locator("optgroup[label='Local Ollama'] option")).to_have_text(list(LOCAL_MODELS))
    picker.select_option(choice_value("router", "meta-llama/llama-3.1-8b-instruct"))
    page.fill("#settings-system-prompt", "Talk like a pirate.")
    page.fill("#settings-temperature", "0.4")
    shot(page, f"new-chat-{color_scheme}")
    send(page, "Hello there")

    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"))
    wait_for_status(page, "complete")
    expect(latest_reply(page).locator(".message-model")).to_have_text(
        "meta-llama/llama-3.1-8b-instruct · Router"
    )
    [request] = router.wait_for_requests(1)
    assert request["model"] == "meta-llama/llama-3.1-8b-instruct"
    assert request["temperature"] == 0.4
    assert request["messages"][0] == {"role": "system", "content": "Talk like a pirate."}
    expect(page.locator("#model-badge")).to_have_text("meta-llama/llama-3.1-8b-instruct")

    # The conversation's own settings: switch to the local model for the next reply.
    page.locator("#conversation-settings > summary").click()
    expect(page.locator("#settings-model")).to_have_value(
        choice_value("router", "meta-llama/llama-3.1-8b-instruct")
    )
    page.locator("#settings-model").select_option(choice_value("local", "qwen2.5:7b-instruct"))
    page.locator("#conversation-settings").get_by_role("button", name="Save").click()
    expect(page.locator("#settings-status")).to_contain_text("Saved")
    expect(page.locator("#model-badge")).to_have_text("qwen2.5:7b-instruct")
    shot(page, f"panel-{color_scheme}")
    send(page, "And now?")

    expect(latest_reply(page).locator(".message-model")).to_have_text(
        "qwen2.5:7b-instruct · Local Ollama", timeout=REPLY_TIMEOUT_MS
    )
    expect(latest_reply(page)).to_contain_text("Hello from the local model.")
    [request] = local.wait_for_requests(1)
    assert request["model"] == "qwen2.5:7b-instruct"
    assert request["messages"][0] == {"role": "system", "content": "Talk like a pirate."}
    shot(page, f"replies-{color_scheme}")


def test_account_defaults_preselect_the_model_of_new_chats(open_page, providers_now):
    page = open_page()
    sign_up(page, "defaults@example.com")

    page.get_by_role("link", name="Settings").click()
    expect(page).to_have_url(re.compile(r"/account/settings/$"))
    page.locator("#defaults-model").select_option(choice_value("router", "openai/gpt-4o"))
    page.fill("#defaults-system-prompt", "Answer in one sentence.")
    shot(page, "account")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Saved")

    page.goto("/")
    expect(page.locator("#settings-model")).to_have_value(choice_value("router", "openai/gpt-4o"))
    expect(page.locator("#settings-system-prompt")).to_have_value("Answer in one sentence.")
    expect(page.locator("#model-badge")).to_have_text("openai/gpt-4o")
