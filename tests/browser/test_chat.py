"""The chat as a person meets it: Debian's chromium, driven by Playwright, against daphne.

The whole stack runs for real (tests/browser/conftest.py): allauth's pages, htmx, the websocket
that streams replies, and Markdown rendering, served by daphne in a subprocess over the test
database. The model is tests.support.fake_openai, scripted per test. Screenshots of key moments
are saved in test-artifacts/.

Everything here happens through the browser, as a user would do it: while Playwright runs, an
event loop runs in this thread, so the Django ORM would refuse to work here anyway.
"""

import re
from collections.abc import Callable
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import (
    COUNTING_REPLY,
    MODEL_NAME,
    RECORD_STREAMED_TEXT,
    SLOW_TOKEN_SECONDS,
    latest_reply,
    screenshot,
    send,
    sign_up,
    streamed_texts,
    wait_for_new_reply,
    wait_for_status,
    wait_for_streaming_text,
)
from tests.support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db(transaction=True)


def test_sign_up_chat_and_watch_the_reply_stream_in(page: Page, model: FakeOpenAI) -> None:
    question = "How do I add tests to my project?"
    reply_markdown = (
        "Here is **the plan**, one small step at a time:\n\n"
        "1. Write a test that fails.\n"
        "2. Make it pass, then run `pytest -q` again.\n"
        "3. Tidy up while everything stays green.\n\n"
        "That is the whole loop, and it works for projects of any size."
    )
    model.script(Reply(text=reply_markdown, delay=0.1))

    sign_up(page, "ada@example.com")
    expect(page.locator(".model-badge")).to_have_text(MODEL_NAME)
    expect(page.locator("#conversation-list")).to_contain_text("No conversations yet")
    screenshot(page, "1-new-chat")

    send(page, question)
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    partial = wait_for_streaming_text(page, "the plan")
    screenshot(page, "1-streaming")
    assert reply_markdown.startswith(partial)
    assert len(partial) < len(reply_markdown)

    wait_for_status(page, "complete")
    reply = latest_reply(page)
    reply_id = reply.get_attribute("id")
    assert streamed_texts(page, reply_id)[-1] == reply_markdown
    expect(reply.locator("strong")).to_have_text("the plan")
    expect(reply.locator("code")).to_have_text("pytest -q")
    expect(reply.locator("ol > li")).to_have_count(3)
    rendered_reply = reply.locator(".message-body").inner_text()
    screenshot(page, "1-complete")

    page.reload()
    messages = page.locator("#message-list > li")
    expect(messages).to_have_count(2)
    expect(messages.nth(0).locator(".message-body")).to_have_text(question)
    expect(messages.nth(1)).to_have_id(reply_id)
    assert messages.nth(1).locator(".message-body").inner_text() == rendered_reply
    # The model may rename the conversation after its first reply, so the entry is found by link.
    listed = page.locator("#conversation-list a")
    expect(listed).to_have_count(1)
    expect(listed).to_have_attribute("href", urlparse(page.url).path)
    expect(listed).to_have_attribute("aria-current", "page")
    expect(listed).not_to_have_text("")
    screenshot(page, "1-after-reload")


def test_reloading_mid_reply_picks_up_the_stream_without_gap_or_repeat(
    page: Page, model: FakeOpenAI
) -> None:
    model.script(Reply(text=COUNTING_REPLY, delay=SLOW_TOKEN_SECONDS))
    sign_up(page, "grace@example.com")

    send(page, "Count to sixty, slowly.")
    before_reload = wait_for_streaming_text(page, "step 8.")
    page.reload()
    wait_for_streaming_text(page, "step 16.")
    screenshot(page, "2-streaming-after-reload")
    wait_for_status(page, "complete")

    assert COUNTING_REPLY.startswith(before_reload)
    assert len(before_reload) < len(COUNTING_REPLY)
    reply = latest_reply(page)
    # Everything the reloaded page showed, from the text it was rendered with to the end.
    shown_while_streaming = streamed_texts(page, reply.get_attribute("id"))
    assert all(COUNTING_REPLY.startswith(text) for text in shown_while_streaming)
    assert shown_while_streaming[-1] == COUNTING_REPLY
    expect(reply.locator(".message-body")).to_have_text(COUNTING_REPLY)

    page.reload()
    expect(latest_reply(page).locator(".message-body")).to_have_text(COUNTING_REPLY)


def test_stop_keeps_the_partial_reply_and_frees_the_composer(page: Page, model: FakeOpenAI) -> None:
    model.script(
        Reply(text=COUNTING_REPLY, delay=SLOW_TOKEN_SECONDS),
        Reply(text="Fine, I will stop counting."),
    )
    sign_up(page, "edsger@example.com")

    send(page, "Count to sixty, slowly.")
    wait_for_streaming_text(page, "step 5.")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.get_by_role("button", name="Stop").click()

    wait_for_status(page, "stopped")
    stopped = latest_reply(page)
    expect(stopped.locator(".message-status")).to_contain_text("Stopped")
    kept = stopped.locator(".message-body").inner_text()
    assert "step 5." in kept
    assert COUNTING_REPLY.startswith(kept)
    assert len(kept) < len(COUNTING_REPLY)
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    screenshot(page, "3-stopped")

    send(page, "That is enough, thanks.")
    wait_for_status(page, "complete")
    expect(latest_reply(page).locator(".message-body")).to_have_text("Fine, I will stop counting.")
    expect(page.locator("#message-list > li")).to_have_count(4)
    expect(page.locator("#message-list > li").nth(1).locator(".message-body")).to_have_text(kept)


def test_another_users_conversation_is_not_found(
    new_page: Callable[[], Page], model: FakeOpenAI
) -> None:
    secret = "My locker combination is 12-34-56."
    model.script(Reply(text="Noted, I will keep 12-34-56 to myself."))
    owner = new_page()
    sign_up(owner, "owner@example.com")
    send(owner, secret)
    wait_for_status(owner, "complete")
    conversation_path = urlparse(owner.url).path

    intruder = new_page()
    sign_up(intruder, "intruder@example.com")
    expect(intruder.locator("#conversation-list")).to_contain_text("No conversations yet")
    response = intruder.goto(conversation_path)
    screenshot(intruder, "4-other-users-conversation")

    assert response.status == 404
    assert "12-34-56" not in intruder.content()
    socket_outcome = intruder.evaluate(
        """path => new Promise(resolve => {
          const received = [];
          const socket = new WebSocket(`ws://${location.host}/ws${path}`);
          socket.onmessage = event => received.push(event.data);
          socket.onopen = () => { socket.close(); resolve({opened: true, received}); };
          socket.onerror = socket.onclose = () => resolve({opened: false, received});
        })""",
        conversation_path,
    )
    assert socket_outcome == {"opened": False, "received": []}


def test_shift_enter_adds_a_line_and_markup_is_shown_as_text(page: Page, model: FakeOpenAI) -> None:
    script_line = "<script>alert('user script ran')</script>"
    image_line = "<img src=x onerror=\"alert('user image ran')\">"
    reply_text = "Showing it back: <img src=y onerror=\"alert('reply ran')\"> <b>not bold</b>"
    model.script(Reply(text=reply_text, delay=0.02))
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_up(page, "barbara@example.com")
    home = page.url

    composer = page.locator("#composer-input")
    composer.fill(script_line)
    composer.press("Shift+Enter")
    expect(composer).to_have_value(script_line + "\n")
    page.keyboard.type(image_line)
    expect(page).to_have_url(home)
    composer.press("Enter")

    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    wait_for_status(page, "complete")
    messages = page.locator("#message-list > li")
    expect(messages).to_have_count(2)
    expect(messages.nth(0).locator(".message-body")).to_have_text(f"{script_line}\n{image_line}")
    expect(latest_reply(page).locator(".message-body")).to_have_text(reply_text)
    screenshot(page, "5-markup-as-text")

    page.reload()
    expect(messages.nth(0).locator(".message-body")).to_have_text(f"{script_line}\n{image_line}")
    expect(latest_reply(page).locator(".message-body")).to_have_text(reply_text)
    expect(page.locator("#message-list").locator("script, img, b")).to_have_count(0)
    assert dialogs == []
    assert errors == []


def test_regenerate_and_edit_keep_earlier_versions(page: Page, model: FakeOpenAI) -> None:
    model.script(
        Reply(text="First answer."),
        Reply(text="Second answer, slowly written " + "word " * 40, delay=0.05),
        Reply(text="Answer to the edited question."),
    )
    sign_up(page, "alan@example.com")
    send(page, "Original question")
    wait_for_status(page, "complete")
    expect(latest_reply(page).locator(".message-body")).to_have_text("First answer.")

    page.get_by_role("button", name="Regenerate").click()
    wait_for_streaming_text(page, "Second")
    # While it streams, neither Regenerate nor Edit is offered.
    expect(page.get_by_role("button", name="Regenerate")).to_be_hidden()
    expect(page.get_by_role("button", name="Edit")).to_be_hidden()
    wait_for_status(page, "complete")
    reply = latest_reply(page)
    expect(reply.locator(".message-body").first).to_contain_text("Second answer, slowly written")
    versions = reply.locator(".message-versions")
    expect(versions.locator("summary")).to_have_text("1 earlier version")
    versions.locator("summary").click()
    expect(versions.locator(".message-version")).to_have_text("First answer.")
    screenshot(page, "6-regenerated")

    answered = reply.get_attribute("id")
    page.get_by_role("button", name="Edit").click()
    editor = page.get_by_label("Edit your message")
    expect(editor).to_be_focused()
    editor.fill("Edited question")
    page.get_by_role("button", name="Save and send").click()
    wait_for_new_reply(page, replacing=answered)
    messages = page.locator("#message-list > li")
    expect(messages).to_have_count(2)
    expect(messages.nth(0).locator(".message-body").first).to_have_text("Edited question")
    expect(messages.nth(1).locator(".message-body").first).to_have_text(
        "Answer to the edited question."
    )
    expect(messages.nth(1).locator(".message-versions summary")).to_have_text("2 earlier versions")
    screenshot(page, "6-edited")

    page.reload()
    expect(messages.nth(0).locator(".message-versions summary")).to_have_text("1 earlier version")
    expect(messages.nth(1).locator(".message-versions summary")).to_have_text("2 earlier versions")


def test_text_selected_the_moment_the_editor_has_the_focus_is_typed_over(
    page: Page, model: FakeOpenAI
) -> None:
    model.script(Reply(text="First answer."), Reply(text="Answer to the edited question."))
    # A quick hand: all the text is selected the instant the editor has the focus.
    page.add_init_script(
        """document.addEventListener("focusin", event => {
          if (event.target.matches(".message-edit textarea")) event.target.select();
        });"""
    )
    sign_up(page, "grace@example.com")
    send(page, "Original question")
    wait_for_status(page, "complete")
    answered = latest_reply(page).get_attribute("id")

    page.get_by_role("button", name="Edit").click()
    editor = page.get_by_label("Edit your message")
    expect(editor).to_be_focused()
    # Once htmx has settled the form, the selection is still there to be typed over.
    expect(page.locator("#message-list > li.editing")).not_to_have_class(
        re.compile(r"\bhtmx-(added|settling)\b")
    )
    page.keyboard.type("Edited question")
    expect(editor).to_have_value("Edited question")
    page.get_by_role("button", name="Save and send").click()
    wait_for_new_reply(page, replacing=answered)
    expect(page.locator("#message-list > li").nth(0).locator(".message-body").first).to_have_text(
        "Edited question"
    )


def test_a_second_tab_watches_the_same_reply_and_sees_the_list_change(
    browser: Browser, chat_server: str, model: FakeOpenAI
) -> None:
    model.script(Reply(text=COUNTING_REPLY, delay=SLOW_TOKEN_SECONDS))
    context = browser.new_context(base_url=chat_server, viewport={"width": 1100, "height": 800})
    context.set_default_timeout(10_000)
    context.add_init_script(RECORD_STREAMED_TEXT)
    first, second = context.new_page(), context.new_page()
    sign_up(first, "tabs@example.com")
    second.goto("/")

    send(first, "Count to sixty, slowly.")
    expect(first).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    # The other tab, still on the new-chat page, lists the new conversation at once.
    expect(second.locator("#conversation-list a")).to_have_count(1)
    second.locator("#conversation-list a").click()
    wait_for_streaming_text(second, "step 20.")
    wait_for_status(first, "complete")
    wait_for_status(second, "complete")
    for tab in (first, second):
        reply = latest_reply(tab)
        shown = streamed_texts(tab, reply.get_attribute("id"))
        assert all(COUNTING_REPLY.startswith(text) for text in shown)
        expect(reply.locator(".message-body")).to_have_text(COUNTING_REPLY)
    screenshot(second, "7-second-tab")
    context.close()
