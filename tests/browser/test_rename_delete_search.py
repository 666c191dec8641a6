"""Managing and searching conversations in Debian's chromium, against daphne: renaming in place
(Enter saves, Escape cancels), deleting after a confirmation made with the keyboard alone, and
searching as one types, then landing on the very message, however old."""

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import User
from conversations.models import Conversation, Message
from tests.support.browser import PASSWORD, screenshot, send, sign_up, wait_for_status
from tests.support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db(transaction=True)


def sign_in(page: Page, email: str) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form").get_by_role("button", name=re.compile("sign in", re.I)).click()
    expect(page).to_have_url(re.compile(r"/$"))


def start_chat(page: Page, model: FakeOpenAI, text: str) -> None:
    model.script(Reply(text="Noted."))
    send(page, text)
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    wait_for_status(page, "complete")


def test_rename_in_the_header_and_the_sidebar_with_enter_and_escape(
    page: Page, model: FakeOpenAI
) -> None:
    sign_up(page, "renamer@example.com")
    start_chat(page, model, "Plan a trip")
    title = page.locator("#conversation-title")
    listed = page.locator("#conversation-list li.conversation-item a")

    page.locator("#conversation-rename").click()
    field = page.locator("#conversation-heading .rename-input")
    expect(field).to_be_focused()
    field.fill("Lisbon in May")
    screenshot(page, "manage-1-rename-header")
    field.press("Enter")
    expect(title).to_have_text("Lisbon in May")
    expect(listed).to_have_text(["Lisbon in May"])  # this tab's sidebar, over the socket

    page.locator("#conversation-rename").click()
    page.locator("#conversation-heading .rename-input").fill("Never saved")
    page.keyboard.press("Escape")
    expect(title).to_have_text("Lisbon in May")
    expect(page.locator("#conversation-rename")).to_be_visible()

    page.locator("#conversation-list li.conversation-item summary").click()
    page.locator("#conversation-list").get_by_role("button", name="Rename").click()
    field = page.locator("#conversation-list .rename-input")
    expect(field).to_be_focused()
    field.fill("")
    field.press("Enter")  # the browser refuses an empty name: nothing is sent
    expect(field).to_be_visible()
    field.fill("Porto instead")
    field.press("Enter")
    expect(listed).to_have_text(["Porto instead"])
    expect(title).to_have_text("Porto instead")
    expect(listed).to_have_attribute("aria-current", "page")


def test_delete_asks_first_and_works_with_the_keyboard_alone(
    new_page: Callable[[], Page], model: FakeOpenAI
) -> None:
    page = new_page()
    sign_up(page, "deleter@example.com")
    start_chat(page, model, "Keep this one")
    kept_url = page.url
    page.goto("/")
    start_chat(page, model, "Delete this one")
    listed = page.locator("#conversation-list li.conversation-item")
    expect(listed).to_have_count(2)
    other_tab = page.context.new_page()
    other_tab.goto(kept_url)

    delete = page.locator("#conversation-delete")
    delete.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("dialog#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    screenshot(page, "manage-2-delete-dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(delete).to_be_focused()
    expect(listed).to_have_count(2)

    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Delete")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/$"))
    expect(listed).to_have_count(1)
    expect(listed.locator("a")).to_have_text(["Keep this one"])
    # The other open tab's sidebar lost it too, without a reload.
    expect(other_tab.locator("#conversation-list li.conversation-item")).to_have_count(1)


@pytest.fixture
def reader() -> tuple[str, str]:
    """A user with a long conversation, the message to find far above its newest 100."""
    user = User.objects.create_user("reader@example.com", PASSWORD)
    now = timezone.now()
    conversation = Conversation.objects.create(owner=user, title="Houseplants", updated_at=now)
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            role="user" if n % 2 == 0 else "assistant",
            content=f"Message {n} about watering." if n != 7 else "My Boston fern has brown tips.",
            created_at=now - timedelta(minutes=300 - n),
        )
        for n in range(160)
    )
    Conversation.objects.create(
        owner=User.objects.create_user("other@example.com", PASSWORD),
        title="Someone else's fern",
    )
    return user.email, str(conversation.messages.get(content__contains="Boston").pk)


def test_search_as_you_type_then_land_on_the_old_message(
    reader: tuple[str, str], page: Page
) -> None:
    email, target_id = reader
    sign_in(page, email)

    page.locator("#sidebar-search-input").press_sequentially("boston fern", delay=30)
    results = page.locator("#search-results")
    hit = results.locator("a.search-hit-link")
    expect(hit).to_have_count(1)
    expect(hit.locator("mark")).to_have_text(["Boston", "fern"])
    expect(results).not_to_contain_text("Someone else")
    expect(page.locator("#conversation-list")).to_be_hidden()
    screenshot(page, "manage-3-search-sidebar")

    hit.click()

    expect(page).to_have_url(re.compile(rf"\?message={target_id}#message-{target_id}$"))
    target = page.locator(f"#message-{target_id}")
    expect(target).to_contain_text("My Boston fern has brown tips.")
    expect(target).to_be_in_viewport()
    expect(page.locator("#message-list > li.message")).to_have_count(160 - 7 + 2)
    screenshot(page, "manage-4-search-target")

    page.locator("#sidebar-search-input").fill("boston")
    page.locator("#sidebar-search-input").press("Enter")
    expect(page).to_have_url(re.compile(r"/search/\?q=boston"))
    expect(page.locator("#search-results a.search-hit-link")).to_have_count(1)
