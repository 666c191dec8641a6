"""Hostile input: script in every place user or model text is shown, websockets opened from
elsewhere or fed junk, and messages too long for the site. Password guessing is in
tests/test_login_limits.py.

The XSS corpus and the HTML auditor are in tests/support/xss.py.
"""

import asyncio
import html
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from urllib.parse import quote, urlencode

import httpx2
import pytest
import websockets
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import AsyncClient, Client
from django.urls import reverse
from markdown_it import MarkdownIt

from chatsite.asgi import application
from conversations.models import TITLE_MAX_LENGTH, Conversation, Message, ShareLink
from conversations.replies import announce, running
from conversations.replies.turns import title_from
from conversations.sockets.routing import websocket_urlpatterns
from tests.support.fake_openai import Reply
from tests.support.ledger import paid_reply
from tests.support.live import ChatClient, Daphne
from tests.support.replies import wait_for_reply
from tests.support.sockets import SITE_ORIGIN
from tests.support.xss import (
    INERT_PAYLOADS,
    PAYLOADS,
    Element,
    assert_inert,
    executable_markup,
    foreign_markup_in_user_content,
    parse,
)

HTMX = {"HX-Request": "true"}
ALL_PAYLOADS = "\n\n".join(PAYLOADS.values())


def texts_of(document: Element, class_name: str) -> list[str]:
    return [element.text() for element in document.all(class_name=class_name)]


# --------------------------------------------------------------------------- #
# The corpus
# --------------------------------------------------------------------------- #


def test_the_auditor_catches_every_payload_a_page_shows_raw() -> None:
    """The auditor is not blind: each payload, put in a page without escaping or rendered by a
    careless Markdown renderer, is caught; the inert ones (look-alikes) are not."""
    careless = MarkdownIt("commonmark", {"html": True}).enable(["table"])
    careless.validateLink = lambda url: True

    assert len(PAYLOADS) >= 50
    for name, payload in PAYLOADS.items():
        pages = [
            f'<div class="message-body">{payload}</div>',
            f'<input name="title" value="{payload}">',
            f"<input name='title' value='{payload}'>",
            f'<div class="message-body">{careless.render(payload)}</div>',
        ]
        caught = [executable_markup(page) + foreign_markup_in_user_content(page) for page in pages]
        assert any(caught) == (name not in INERT_PAYLOADS), name


# --------------------------------------------------------------------------- #
# Pages
# --------------------------------------------------------------------------- #


@pytest.fixture
def hostile(request, make_conversation):
    """Alice's conversation where the payload is everywhere text goes: the title, her message,
    a reply that failed (its text, the model's name, the error) and its earlier version."""
    payload = PAYLOADS[request.param]
    conversation = make_conversation(
        title=payload[:TITLE_MAX_LENGTH], history=[("user", payload), ("assistant", payload)]
    )
    question, earlier = conversation.messages.order_by("created_at")
    reply = conversation.messages.create(
        role=Message.Role.ASSISTANT,
        status=Message.Status.ERROR,
        content=payload,
        created_at=earlier.created_at + timedelta(milliseconds=1),
        metadata={"model": payload, "error": payload, "usage": {"total_tokens": 3}},
    )
    earlier.superseded_by = reply
    earlier.save(update_fields=["superseded_by"])
    return payload, conversation, question, reply


@pytest.mark.live
@pytest.mark.django_db
@pytest.mark.parametrize("hostile", PAYLOADS, indirect=True)
def test_hostile_text_stays_text_on_the_chat_page_and_in_the_edit_form(hostile, alice_client):
    payload, conversation, question, reply = hostile
    title = conversation.title

    def shown(url: str) -> Element:
        return assert_inert(alice_client.get(url).content.decode())

    page = shown(conversation.get_absolute_url())
    edit = shown(reverse("message_edit", args=[conversation.pk, question.pk]))

    assert [element.text() for element in page.all("title")] == [f"{title} · chatsite"]
    assert page.by_id("conversation-title").text() == title
    assert page.by_id(f"conversation-{conversation.pk}").all("a")[0].text() == title
    shown_reply = page.by_id(f"message-{reply.pk}")
    assert shown_reply.all("dd")[0].text() == payload  # the model's name
    assert texts_of(shown_reply, "error") == [payload]
    assert len(shown_reply.all(class_name="message-version")) == 1
    assert [textarea.text() for textarea in edit.all("textarea")] == [payload]


@pytest.mark.django_db
def test_a_streaming_reply_shows_hostile_text_exactly_as_written(make_conversation, alice_client):
    conversation = make_conversation(history=[("user", "Say it all")])
    reply = conversation.messages.create(
        role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, content=ALL_PAYLOADS
    )

    page = assert_inert(alice_client.get(conversation.get_absolute_url()).content.decode())

    assert page.by_id(f"message-{reply.pk}-text").text() == ALL_PAYLOADS


@pytest.mark.django_db
@pytest.mark.parametrize("view", ["message_send", "message_edit"])
def test_a_refused_message_comes_back_in_the_form_as_text(
    view, settings, conversation, alice_client
):
    settings.CHAT_MAX_MESSAGE_CHARS = len(ALL_PAYLOADS) - 1
    question = conversation.messages.get(role=Message.Role.USER)
    args = [conversation.pk] if view == "message_send" else [conversation.pk, question.pk]

    response = alice_client.post(reverse(view, args=args), {"text": ALL_PAYLOADS}, headers=HTMX)

    form = assert_inert(response.content.decode())
    assert [textarea.text() for textarea in form.all("textarea")] == [ALL_PAYLOADS]
    assert conversation.messages.count() == 2


def admin_page(client: Client, url: str) -> Element:
    return assert_inert(client.get(url).content.decode(), admin=True)


@pytest.mark.live
@pytest.mark.django_db
@pytest.mark.parametrize("hostile", PAYLOADS, indirect=True)
def test_hostile_text_stays_text_in_the_admins_conversation_form(hostile, admin_client):
    payload, conversation, *_ = hostile

    form = admin_page(
        admin_client, reverse("admin:conversations_conversation_change", args=[conversation.pk])
    )

    [title_input] = [e for e in form.all("input") if e.attrs.get("name") == "title"]
    assert title_input.attrs["value"] == conversation.title
    # The messages, inline and read-only: their line breaks become <br>.
    assert payload.replace("\n", "") in form.text()


@pytest.mark.django_db
def test_the_admin_lists_and_message_page_show_hostile_text_as_text(
    admin_client, make_conversation
):
    for payload in PAYLOADS.values():
        make_conversation(title=payload[:TITLE_MAX_LENGTH], history=[("user", payload)])
    everything = make_conversation(history=[("user", "All of it"), ("assistant", ALL_PAYLOADS)])
    reply = everything.messages.get(role=Message.Role.ASSISTANT)
    reply.metadata = {"model": PAYLOADS["close-textarea"], "error": PAYLOADS["script"]}
    reply.save(update_fields=["metadata"])

    titles = admin_page(admin_client, reverse("admin:conversations_conversation_changelist"))
    contents = admin_page(admin_client, reverse("admin:conversations_message_changelist"))
    message = admin_page(
        admin_client, reverse("admin:conversations_message_change", args=[reply.pk])
    )

    assert sorted(texts_of(titles, "field-display_title")) == sorted(
        [p[:TITLE_MAX_LENGTH] for p in PAYLOADS.values()] + ["New chat"]
    )
    listed = texts_of(contents, "field-short_content")
    assert all(p[:80] in listed for p in PAYLOADS.values())
    assert PAYLOADS["close-textarea"] in contents.text()  # the model's name
    assert ALL_PAYLOADS.replace("\n", "") in message.text()


@pytest.mark.django_db
def test_hostile_model_names_stay_text_on_the_usage_page_and_the_admin_totals(
    alice_client, admin_client, make_conversation
):
    """A provider names its model as it likes: the usage chart (its <title> tooltips), its
    legend and tables, and the admin's totals show that name as text."""
    conversation = make_conversation(history=[("user", "Hello")])
    for payload in PAYLOADS.values():
        paid_reply(conversation, prompt=2, completion=1, model=payload)
    query = "?next=" + quote(PAYLOADS["attr-event-injection"])

    # The chart is an inline <svg>, as the admin's icons are.
    page = assert_inert(alice_client.get(reverse("usage") + query).content.decode(), admin=True)
    totals = admin_page(admin_client, reverse("admin:conversations_message_usage"))

    payloads = sorted(PAYLOADS.values())
    assert sorted(texts_of(page.by_id("usage-legend"), "usage-model")) == payloads
    assert sorted(texts_of(page.by_id("usage-models"), "usage-model")) == payloads
    chart_titles = [title.text() for title in page.by_id("usage-chart").all("title")]
    assert all(any(payload in title for title in chart_titles) for payload in payloads)
    assert sorted(texts_of(totals.by_id("usage-by-model"), "usage-model")) == payloads


# --------------------------------------------------------------------------- #
# Text streamed over the websocket
# --------------------------------------------------------------------------- #


@pytest.mark.live
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_hostile_text_streamed_to_an_open_page_arrives_as_text(
    settings, open_socket, alice_async_client, make_conversation, fake_openai
):
    """Every fragment the socket sends stays inert: the new turn with the user's message, the
    reply's text in pieces, the finished reply as Markdown, the titles and the sidebar."""
    settings.CHAT_AUTO_TITLE = True
    # Each payload split in two, so that fragments break them anywhere.
    pieces = [half for p in PAYLOADS.values() for half in (p[: len(p) // 2], p[len(p) // 2 :])]
    model_title = PAYLOADS["img-onerror"]
    # Paced, so that the page follows the reply while it streams.
    fake_openai.script(Reply(chunks=pieces, delay=0.01), Reply(text=model_title))
    conversation = await sync_to_async(make_conversation)()
    socket = await open_socket(conversation)

    response = await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": ALL_PAYLOADS}, headers=HTMX
    )
    assert response.status_code == 200
    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).aget()
    await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)
    await asyncio.gather(*running._background_tasks)
    async with asyncio.timeout(5):
        while model_title not in sidebar_titles(socket.frames):  # the last thing to change
            await socket.receive()

    await reply.arefresh_from_db()
    assert reply.content == "".join(pieces)
    assert socket.text_of(reply) == reply.content
    assert socket.delta_count(reply) > 1
    for frame in socket.frames:
        assert_inert(frame)
    first_title = title_from(ALL_PAYLOADS)
    assert headings(socket.frames) == [first_title, model_title]
    assert sidebar_titles(socket.frames) == [first_title, model_title]


def headings(frames: list[str]) -> list[str]:
    """The conversation titles the frames show in the page's heading, in order, once each."""
    shown = [
        element.text()
        for frame in frames
        for element in parse(frame).iter()
        if element.attrs.get("id") == "conversation-title"
    ]
    return list(dict.fromkeys(shown))


def sidebar_titles(frames: list[str]) -> list[str]:
    """The titles the frames show in the list of conversations, in order, once each."""
    shown = [
        link.text()
        for frame in frames
        for sidebar in parse(frame).all(class_name="conversation-list")
        for link in sidebar.all("a")
    ]
    return list(dict.fromkeys(shown))


# --------------------------------------------------------------------------- #
# Characters the database cannot store
# --------------------------------------------------------------------------- #


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_nul_characters_from_the_model_cannot_lose_the_reply(
    open_socket, alice_async_client, conversation, fake_openai
):
    """PostgreSQL refuses NUL characters in text and JSON: the reply, the model's name and its
    errors keep a visible U+FFFD in their place instead of failing to be stored at all."""
    fake_openai.script(
        Reply(chunks=["Before ", "a NUL\x00here", " and after."], model="model\x00name"),
        Reply(status=400, error_message="Bad\x00request"),
    )
    socket = await open_socket(conversation)

    replies, finals = [], []
    for text in ("First", "Second"):
        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": text}, headers=HTMX
        )
        reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest(
            "created_at"
        )
        finals.append(await socket.receive_until_done(reply))
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        replies.append(reply)

    answered, failed = replies
    assert answered.status == Message.Status.COMPLETE
    assert answered.content == "Before a NUL\ufffdhere and after."
    assert answered.metadata["model"] == "model\ufffdname"
    # The page streamed a beginning of it (or nothing, if it was done first), then shows it all.
    assert answered.content.startswith(socket.text_of(answered))
    assert answered.content in html.unescape(finals[0])
    assert failed.status == Message.Status.ERROR
    assert "Bad\ufffdrequest" in failed.error_text


@pytest.mark.django_db
def test_a_message_with_a_nul_character_is_refused_and_nothing_is_stored(
    conversation, alice_client
):
    before = stored_state()

    response = alice_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "a\x00b"}, headers=HTMX
    )

    assert response.status_code == 200
    assert "Null characters are not allowed." in response.content.decode()
    assert stored_state() == before


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_half_a_surrogate_pair_from_the_model_cannot_lose_the_reply(
    open_socket, alice_async_client, conversation, fake_openai
):
    """JSON can spell half of a UTF-16 pair (`"\ud800"`), which is no character at all: UTF-8
    cannot encode it, so neither database nor socket can take it. It becomes U+FFFD."""
    fake_openai.script(Reply(chunks=["Half ", "a pair\ud800", " here."], model="model\udfff"))
    socket = await open_socket(conversation)

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "Hi"}, headers=HTMX
    )
    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")
    final = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()

    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Half a pair\ufffd here."
    assert reply.metadata["model"] == "model\ufffd"
    assert reply.content in html.unescape(final)


# --------------------------------------------------------------------------- #
# Malformed requests: a clear 4xx, and nothing half made
# --------------------------------------------------------------------------- #

DEEPLY_NESTED_ARRAY = "[" * 100_000 + "]" * 100_000
DEEPLY_NESTED_OBJECT = '{"title":' * 100_000 + '"x"' + "}" * 100_000
NOT_VALID_UNICODE = "A lone UTF-16 surrogate (\\ud800 to \\udfff) is not text."


def json_body(**fields: str) -> str:
    """A JSON object whose values are given already spelled as JSON (escapes and all)."""
    return "{" + ",".join(f'"{name}": "{value}"' for name, value in fields.items()) + "}"


def api_url(route: str, conversation: Conversation) -> str:
    return reverse(route, args=[] if route == "api_conversations" else [conversation.pk])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "route", "body", "code", "message"),
    [
        ("POST", "api_conversations", DEEPLY_NESTED_ARRAY, "invalid_json", "nested too deeply"),
        ("POST", "api_conversations", DEEPLY_NESTED_OBJECT, "invalid_json", "nested too deeply"),
        ("PATCH", "api_conversation", DEEPLY_NESTED_OBJECT, "invalid_json", "nested too deeply"),
        ("POST", "api_messages", DEEPLY_NESTED_ARRAY, "invalid_json", "nested too deeply"),
        ("POST", "api_conversations", json_body(content="Hi \\ud800"), "invalid", "`content`"),
        ("POST", "api_conversations", json_body(title="\\udfff"), "invalid", "`title`"),
        (
            "POST",
            "api_conversations",
            json_body(title="Fine", content="\\udc00 trailing half"),
            "invalid",
            "`content`",
        ),
        ("PATCH", "api_conversation", json_body(title="Half \\ud83d"), "invalid", "`title`"),
        ("POST", "api_messages", json_body(content="\\ud800\\ud800"), "invalid", "`content`"),
    ],
    ids=[
        "nested-array",
        "nested-object",
        "rename-nested",
        "send-nested",
        "start-with-surrogate",
        "title-surrogate",
        "titled-start-with-surrogate",
        "rename-surrogate",
        "send-surrogate",
    ],
)
def test_api_bodies_no_database_can_take_are_a_json_400_and_nothing_is_stored(
    method, route, body, code, message, conversation, alice_client
):
    before = stored_state()

    response = getattr(alice_client, method.lower())(
        api_url(route, conversation), body, content_type="application/json"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    if code == "invalid":
        assert NOT_VALID_UNICODE in error["message"]
    assert stored_state() == before


@pytest.mark.django_db(transaction=True)
def test_a_well_formed_surrogate_pair_is_an_ordinary_character(conversation, alice_client):
    response = alice_client.patch(
        api_url("api_conversation", conversation),
        json_body(title="Smile \\ud83d\\ude00"),
        content_type="application/json",
    )

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "Smile \N{GRINNING FACE}"


NUL_REFUSAL = "A null character (%00) in a web address is not accepted."


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/search/?q=Lisbon%00",
        "/search/?q=Lisbon&page=%00",
        "/api/v1/conversations?limit=%00",
        "/admin/conversations/message/?role=%00",
        "/admin/conversations/message/?status=as%00sistant",
        "/admin/conversations/conversation/?q=%00",
    ],
    ids=["search", "search-page", "api", "admin-role", "admin-status", "admin-search"],
)
def test_a_null_character_in_a_query_is_a_400_that_says_so(url, conversation, admin_client):
    response = admin_client.get(url)

    assert response.status_code == 400
    if url.startswith("/api/"):
        assert response.json()["error"] == {"code": "invalid", "message": NUL_REFUSAL}
    else:
        assert NUL_REFUSAL in parse(response.content.decode()).by_id("main").text()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("since", "until"),
    [("2026-01-01", "9999-12-31"), ("0001-01-01", "2026-01-01")],
    ids=["last-day", "first-day"],
)
def test_the_admin_usage_period_refuses_the_calendars_edges(since, until, admin_client):
    response = admin_client.get(
        reverse("admin:conversations_message_usage"), {"since": since, "until": until}
    )

    assert response.status_code == 400
    errors = parse(response.content.decode()).by_id("usage-period").all(class_name="errorlist")
    assert errors and "Choose a day from" in errors[0].text()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ('{"model": "a\\u0000b"}', "cannot hold a null character"),
        ('{"a\\u0000": 1}', "cannot hold a null character"),
        ('{"notes": ["\\ud800"]}', "or a lone UTF-16 surrogate"),
        (DEEPLY_NESTED_ARRAY, "nested too deeply"),
    ],
    ids=["nul", "nul-in-key", "surrogate", "nested"],
)
def test_the_admins_json_box_refuses_what_it_cannot_store_and_shows_it_again(
    metadata, error, conversation, admin_client
):
    before = Conversation.objects.values_list("title", "metadata").get(pk=conversation.pk)

    response = admin_client.post(
        reverse("admin:conversations_conversation_change", args=[conversation.pk]),
        {"title": "Changed", "metadata": metadata, "messages-TOTAL_FORMS": "0"}
        | {"messages-INITIAL_FORMS": "0"},
    )

    assert response.status_code == 200  # the admin's answer to a form with errors
    page = parse(response.content.decode())
    (errors,) = page.all(class_name="errorlist")
    assert error in errors.text()
    (box,) = [box for box in page.all("textarea") if box.attrs["name"] == "metadata"]
    assert box.text().removeprefix("\n") == metadata  # HTML drops a textarea's first newline
    assert Conversation.objects.values_list("title", "metadata").get(pk=conversation.pk) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "drill_down",
    [
        {"year": "9999"},
        {"year": "9999", "month": "12"},
        {"year": "9999", "month": "12", "day": "31"},
    ],
    ids=["year", "month", "day"],
)
@pytest.mark.parametrize("model", ["conversation", "message"])
def test_the_admins_date_drill_down_to_the_last_year_is_an_invalid_lookup(
    model, drill_down, admin_client
):
    """The admin's answer to any filter it cannot apply: back to the list, unfiltered."""
    changelist = reverse(f"admin:conversations_{model}_changelist")
    query = {f"created_at__{part}": value for part, value in drill_down.items()}

    response = admin_client.get(changelist, query)

    assert response.status_code == 302
    assert response["Location"] == f"{changelist}?e=1"


# --------------------------------------------------------------------------- #
# Websockets from elsewhere, and junk on them
# --------------------------------------------------------------------------- #


def websocket_paths(conversation: Conversation) -> list[str]:
    """Every websocket route of the project, its parameters filled with Alice's objects."""
    return [
        "/" + re.sub(r"<uuid:conversation_id>", str(conversation.pk), str(route.pattern))
        for route in websocket_urlpatterns
        if route.name != "ws_unknown"  # the catch-all that refuses everyone
    ]


async def connects(path: str, client: Client | None, origin: str | None) -> bool:
    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if client is not None:
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return connected


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_websockets_from_another_site_or_without_a_session_are_refused(
    alice_client, conversation
):
    for path in websocket_paths(conversation):
        for origin in ["https://evil.example", "http://localhost.evil.example", "null", None]:
            assert not await connects(path, alice_client, origin), f"{path} from {origin}"
        assert not await connects(path, None, SITE_ORIGIN), f"{path} without a session"
        assert await connects(path, alice_client, SITE_ORIGIN), f"{path} from our own page"


JUNK_FRAMES = {
    "binary": {"bytes_data": b"\x00\xff\xfe\x80 binary"},
    "not JSON": {"text_data": "not json {"},
    "a command": {"text_data": json.dumps({"type": "generation.stop"})},
    "forged event": {
        "text_data": json.dumps({"type": "reply.delta", "start": 0, "text": "<script>x</script>"})
    },
    "huge": {"text_data": "x" * 512 * 1024},
}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_junk_frames_get_an_error_and_disturb_no_one(
    open_socket, alice, conversation, bob, bob_client, make_conversation, fake_openai
):
    words = [f" word{n}" for n in range(50)]
    fake_openai.script(Reply(chunks=words, delay=0.02))
    bobs_conversation = await sync_to_async(make_conversation)(owner=bob, title="Bob's")
    bobs_page = await open_socket(bobs_conversation, client=bob_client)
    alices_page = await open_socket(conversation)
    bob_browser = AsyncClient()
    bob_browser.cookies = bob_client.cookies
    await alices_page.receive()  # the page catches up: her last reply

    await bob_browser.post(
        reverse("message_send", args=[bobs_conversation.pk]), {"text": "Count"}, headers=HTMX
    )
    reply = await bobs_conversation.messages.aget(role=Message.Role.ASSISTANT)
    await bobs_page.receive_until_text(reply)
    answers = {}
    for name, frame in JUNK_FRAMES.items():
        await alices_page.communicator.send_to(**frame)
        answers[name] = json.loads(await alices_page.receive())

    await bobs_page.receive_until_done(reply)
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()
    assert all("error" in answer for answer in answers.values()), answers
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "".join(words)
    assert bobs_page.text_of(reply) == reply.content
    # Alice's socket is still open, and still hears her own events.
    await announce.sidebar_changed(alice.pk)
    assert 'id="conversation-list"' in await alices_page.receive()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_real_server_survives_junk_and_oversized_frames(alice, alice_client, conversation):
    """Through daphne itself: a frame over its 1 MiB limit ends that socket (daphne drops the
    connection), and the process goes on serving everyone else."""
    session = alice_client.cookies[settings.SESSION_COOKIE_NAME].value
    last = conversation.messages.order_by("created_at").last().pk

    with Daphne("hostile-frames") as server:
        browser = ChatClient(server, session)

        async def feed_junk() -> tuple[dict, bool, str]:
            async with asyncio.timeout(20):
                async with browser.websocket(conversation.pk, last=str(last)) as socket:
                    await socket.recv()  # the page catches up: the last reply
                    await socket.send(b"\x00\xff\xfe binary")
                    answer = json.loads(await socket.recv())
                    await socket.send("x" * (2 * 1024 * 1024))
                    try:
                        await socket.recv()
                        ended = False
                    except websockets.ConnectionClosed:
                        ended = True
                async with browser.websocket(conversation.pk, last=str(last)) as again:
                    caught_up = await again.recv()
            return answer, ended, caught_up

        answer, oversized_socket_ended, next_socket_frame = asyncio.run(feed_junk())
        page = httpx2.get(f"{server.url}/accounts/login/")

        assert "error" in answer
        assert oversized_socket_ended
        assert f'id="message-{last}"' in next_socket_frame
        assert page.status_code == 200
        assert server.process.poll() is None


# --------------------------------------------------------------------------- #
# Message size
# --------------------------------------------------------------------------- #


def stored_state() -> list[tuple]:
    return list(
        Message.objects.order_by("created_at").values_list("pk", "content", "superseded_by")
    ) + list(Conversation.objects.values_list("pk", "title", "updated_at"))


@pytest.mark.django_db
@pytest.mark.parametrize("view", ["conversation_start", "message_send", "message_edit"])
def test_a_message_over_the_limit_is_refused_with_the_reason_and_nothing_is_stored(
    view, conversation, alice_client
):
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    question = conversation.messages.get(role=Message.Role.USER)
    args = {
        "conversation_start": [],
        "message_send": [conversation.pk],
        "message_edit": [conversation.pk, question.pk],
    }[view]
    before = stored_state()

    response = alice_client.post(
        reverse(view, args=args), {"text": "a" * (limit + 1)}, headers=HTMX
    )

    assert response.status_code == 200
    alerts = [e.text() for e in parse(response.content.decode()).all() if "role" in e.attrs]
    reason = f"This message is {limit + 1:,} characters long; the limit is {limit:,}."
    assert any(reason in alert for alert in alerts), alerts
    assert stored_state() == before


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_longest_message_in_four_byte_characters_is_accepted_and_stored_exactly(
    alice_async_client, conversation, fake_openai, settings
):
    """Sent the way htmx sends a form, each emoji takes 12 bytes: the request body limit must
    leave room for the longest message allowed."""
    fake_openai.script(Reply(text="That is a lot of faces."))
    # A model whose context window holds it (each emoji counts as a token).
    settings.CHAT_CONTEXT_WINDOW = 2 * settings.CHAT_MAX_MESSAGE_CHARS
    text = "\N{GRINNING FACE}" * settings.CHAT_MAX_MESSAGE_CHARS
    body = urlencode({"text": text})
    assert len(body) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    response = await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]),
        body,
        content_type="application/x-www-form-urlencoded",
        headers=HTMX,
    )

    assert response.status_code == 200
    question = await conversation.messages.filter(role=Message.Role.USER).alatest("created_at")
    assert question.content == text
    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")
    await wait_for_reply(reply.pk)
    assert fake_openai.requests[-1]["messages"][-1]["content"] == text


@pytest.mark.django_db
def test_a_request_body_over_the_upload_limit_is_a_bad_request_and_stores_nothing(
    conversation, alice_client
):
    too_many = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 12 + 1
    body = urlencode({"text": "\N{GRINNING FACE}" * too_many})
    before = stored_state()

    response = alice_client.post(
        reverse("message_send", args=[conversation.pk]),
        body,
        content_type="application/x-www-form-urlencoded",
        headers=HTMX,
    )

    assert response.status_code == 400
    assert stored_state() == before


@pytest.mark.live
def test_raising_the_message_limit_raises_the_request_body_limit_with_it() -> None:
    limit = 1_000_000
    report = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)"
    )
    result = subprocess.run(
        [sys.executable, "-c", report],
        cwd=settings.BASE_DIR,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "SECRET_KEY": "x",
            "CHAT_MAX_MESSAGE_CHARS": str(limit),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    longest_body = len(urlencode({"text": "\N{GRINNING FACE}" * limit}))
    assert int(result.stdout) >= longest_body


@pytest.mark.django_db
def test_model_ids_providers_and_settings_stay_text(two_providers, alice_client, make_conversation):
    """Model ids come from the providers, labels from the operator, prompts from users: the
    picker, the settings panel, a reply's model line and the account page show them as text."""
    payloads = list(PAYLOADS.values())
    two_providers.local.models = tuple(payloads)
    conversation = make_conversation(
        metadata={"provider": "local", "model": payloads[0], "system_prompt": payloads[1]},
        history=[("user", "Hi")],
    )
    reply = conversation.messages.create(
        role=Message.Role.ASSISTANT,
        content="Hello",
        metadata={"model": payloads[3], "provider_label": payloads[4], "left_out": 2},
    )
    conversation.owner.default_system_prompt = payloads[2]
    conversation.owner.save()

    chat = assert_inert(alice_client.get(conversation.get_absolute_url()).content.decode())
    account = assert_inert(alice_client.get(reverse("account_settings")).content.decode())

    picker = chat.by_id("settings-model")
    # The provider's default model first, then what it listed.
    assert [option.text() for option in picker.all("option")][1 : len(payloads) + 1] == payloads
    assert chat.by_id("settings-system-prompt").text() == payloads[1]
    shown_reply = chat.by_id(f"message-{reply.pk}")
    assert texts_of(shown_reply, "message-model") == [f"{payloads[3]} · {payloads[4]}"]
    assert account.by_id("defaults-system-prompt").text() == payloads[2]


# --------------------------------------------------------------------------- #
# Code blocks, exports and share links
# --------------------------------------------------------------------------- #


def fenced(payload: str) -> str:
    """The payload as highlighted code, and as the language name of a fence (tildes, which
    let backticks and fences of backticks in)."""
    return f"~~~~~python\n{payload}\n~~~~~\n\n~~~~~{payload.splitlines()[0]}\nprint(1)\n~~~~~"


@pytest.mark.live
@pytest.mark.django_db
@pytest.mark.parametrize("name", PAYLOADS)
def test_hostile_text_in_code_blocks_and_language_names_stays_text(
    name, make_conversation, alice_client
):
    payload = PAYLOADS[name]
    conversation = make_conversation(history=[("user", "Code?"), ("assistant", fenced(payload))])
    reply = conversation.messages.get(role=Message.Role.ASSISTANT)

    page = assert_inert(alice_client.get(conversation.get_absolute_url()).content.decode())

    shown = page.by_id(f"message-{reply.pk}")
    blocks = shown.all("div", "code-block")
    assert [block.all("code")[0].text() for block in blocks] == [payload + "\n", "print(1)\n"]
    assert shown.all("button", "copy-message")[0].attrs["data-copy-text"] == fenced(payload)


@pytest.mark.live
@pytest.mark.django_db
@pytest.mark.parametrize("hostile", PAYLOADS, indirect=True)
def test_hostile_text_stays_text_on_a_share_link_page(hostile, client):
    payload, conversation, _, _ = hostile
    share = ShareLink.snapshot_of(conversation)

    page = assert_inert(client.get(share.get_absolute_url()).content.decode())

    assert page.by_id("conversation-title").text() == conversation.title
    assert [element.text() for element in page.all("title")] == [
        f"{conversation.title} · shared on chatsite"
    ]
    copies = [button.attrs["data-copy-text"] for button in page.all("button", "copy-message")]
    assert copies == [payload, payload]


@pytest.mark.django_db
def test_exports_carry_hostile_text_exactly_and_are_never_shown_as_a_page(
    make_conversation, alice_client
):
    conversation = make_conversation(
        title=PAYLOADS["script"], history=[("user", ALL_PAYLOADS), ("assistant", ALL_PAYLOADS)]
    )
    as_markdown = alice_client.get(reverse("conversation_export_markdown", args=[conversation.pk]))
    as_json = alice_client.get(reverse("conversation_export_json", args=[conversation.pk]))
    everything = alice_client.get(reverse("export_all"))

    for response in (as_markdown, as_json, everything):
        # A download of its own type, which browsers neither sniff nor render in the site.
        assert response["Content-Disposition"].startswith("attachment; ")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Type"].split(";")[0] in ("text/markdown", "application/json")
        assert '"' not in response["Content-Disposition"].split('filename="')[1][:-1]
    assert as_markdown.content.decode().count(ALL_PAYLOADS) == 2
    exported = json.loads(as_json.content)["conversation"]
    assert exported["title"] == PAYLOADS["script"]
    assert [m["content"] for m in exported["messages"]] == [ALL_PAYLOADS, ALL_PAYLOADS]
    streamed = json.loads(async_to_sync(_read_stream)(everything))
    assert [m["content"] for m in streamed["conversations"][0]["messages"]] == [
        ALL_PAYLOADS,
        ALL_PAYLOADS,
    ]


async def _read_stream(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])
