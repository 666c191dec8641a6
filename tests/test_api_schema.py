"""The check of every API response against the OpenAPI schema (tests/support/openapi.py) bites:
an answer the schema does not describe fails the test that receives it, whichever client
received it."""

import json

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from django.urls import reverse

from accounts.models import ApiToken
from conversations.api import views as api
from conversations.api.schema import schema
from conversations.api.views import MAX_PAGE_SIZE
from conversations.errors import ErrorCode
from conversations.models import TITLE_MAX_LENGTH, Conversation, Message
from conversations.replies import events
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.openapi import expected_mismatch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def script(alice) -> Client:
    return Client(headers={"Authorization": f"Bearer {ApiToken.issue(alice, 'tests')[1]}"})


@pytest.fixture
def changed_conversations(monkeypatch):
    """Make the API describe conversations with `change(described)` applied."""

    def change_with(change) -> None:
        original = api.conversation_json
        monkeypatch.setattr(api, "conversation_json", lambda c: change(original(c)))

    return change_with


def test_a_field_of_the_wrong_type_fails_the_test(conversation, script, changed_conversations):
    changed_conversations(lambda described: {**described, "pinned": "no"})

    with expected_mismatch() as mismatch:
        script.get(reverse("api_conversations"))

    assert "GET /api/v1/conversations answered 200" in str(mismatch.value)
    assert "$.data[0].pinned" in str(mismatch.value)
    assert "'no' is not of type 'boolean'" in str(mismatch.value)


def test_a_field_the_schema_does_not_name_fails_the_test(
    conversation, script, changed_conversations
):
    changed_conversations(lambda described: {**described, "owner": "alice@example.com"})

    with expected_mismatch() as mismatch:
        script.get(reverse("api_conversation", args=[conversation.pk]))

    assert "'owner' was unexpected" in str(mismatch.value)


def test_a_status_the_schema_does_not_list_fails_the_test(conversation, script, monkeypatch):
    def teapot(conversation):
        raise api.ApiError(418, ErrorCode.INVALID, "I'm a teapot.")

    monkeypatch.setattr(api, "conversation_json", teapot)

    with expected_mismatch() as mismatch:
        script.get(reverse("api_conversations"))

    assert "418 is not documented" in str(mismatch.value)


@pytest.mark.asyncio
async def test_a_stream_event_that_does_not_match_fails_the_test(
    alice, fake_openai: FakeOpenAI, monkeypatch
):
    fake_openai.script(Reply(text="Lisbon in May."))
    original = api._sse

    def unfinished_done(event: str, data: dict) -> str:
        if event == events.STREAM_DONE:
            data = {**data, "status": "finished"}
        return original(event, data)

    monkeypatch.setattr(api, "_sse", unfinished_done)
    conversation = await Conversation.objects.acreate(owner=alice)
    _, key = await sync_to_async(ApiToken.issue)(alice, "tests")

    response = await AsyncClient().post(
        reverse("api_messages", args=[conversation.pk]),
        {"content": "Where should I go?"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    with expected_mismatch() as mismatch:
        [chunk async for chunk in response.streaming_content]

    assert "event 'done' does not match the schema at $.status" in str(mismatch.value)
    assert await Message.objects.filter(content="Lisbon in May.").aexists()


EVENT_STREAM = {"Content-Type": "text/event-stream"}


def over_http(answer: httpx2.Response) -> httpx2.Client:
    """A client whose every request to 127.0.0.1 is answered `answer`, as a daphne would."""
    return httpx2.Client(
        base_url="http://127.0.0.1:8000", transport=httpx2.MockTransport(lambda _: answer)
    )


def test_an_event_over_http_that_does_not_match_fails_the_test(conversation):
    start = {"conversation": {"id": str(conversation.pk)}}
    stream = f"event: {events.STREAM_START}\ndata: {json.dumps(start)}\n\n".encode()
    answer = httpx2.Response(200, headers=EVENT_STREAM, content=iter([stream]))

    with over_http(answer) as http, expected_mismatch() as mismatch:
        with http.stream("POST", f"/api/v1/conversations/{conversation.pk}/messages") as response:
            list(response.iter_lines())

    assert "event 'start' does not match the schema" in str(mismatch.value)


def test_an_undocumented_event_over_http_fails_the_test(conversation):
    stream = b'event: progress\ndata: {"percent": 50}\n\n'
    answer = httpx2.Response(200, headers=EVENT_STREAM, content=iter([stream]))

    with over_http(answer) as http, expected_mismatch() as mismatch:
        with http.stream("POST", f"/api/v1/conversations/{conversation.pk}/messages") as response:
            list(response.iter_lines())

    assert "event 'progress' is not documented" in str(mismatch.value)


def test_an_answer_that_is_no_refusal_on_an_unknown_path_fails_the_test():
    with (
        over_http(httpx2.Response(200, json={"ok": True})) as http,
        expected_mismatch() as mismatch,
    ):
        http.get("/api/v1/nothing")

    assert "no such operation in the schema" in str(mismatch.value)
    assert "200 is not documented" in str(mismatch.value)


def test_the_schemas_enums_and_limits_are_the_codes(settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 1234
    described = schema()

    paths = described["paths"]
    send = paths["/api/v1/conversations/{conversation_id}/messages"]["post"]
    content = send["requestBody"]["content"]["application/json"]["schema"]["properties"]
    limit = paths["/api/v1/conversations"]["get"]["parameters"][0]["schema"]
    conversation = described["components"]["schemas"]["Conversation"]["properties"]
    message = described["components"]["schemas"]["Message"]["properties"]
    error = described["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert content["content"]["maxLength"] == 1234
    assert conversation["title"]["maxLength"] == TITLE_MAX_LENGTH
    assert limit["maximum"] == MAX_PAGE_SIZE
    assert message["role"]["enum"] == list(Message.Role.values)
    assert message["status"]["enum"] == list(Message.Status.values)
    assert set(error["code"]["enum"]) == set(ErrorCode)
