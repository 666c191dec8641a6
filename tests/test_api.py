"""The JSON API: what a script sees at /api/v1/, with a personal token or a browser session.

The endpoints are read in-process; replies are streamed over real HTTP from a live daphne
to a client that reads the server-sent events as they come, with the fake model upstream.
"""

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx2
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connections
from django.test import AsyncClient, Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import ApiToken, User
from conversations.api import docs as api_docs
from conversations.api.schema import schema
from conversations.models import TITLE_MAX_LENGTH, Conversation, Message
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import Daphne
from tests.support.xss import PAYLOADS, assert_inert


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def alice_key(alice: User) -> str:
    return ApiToken.issue(alice, "tests")[1]


@pytest.fixture
def bob_key(bob: User) -> str:
    return ApiToken.issue(bob, "tests")[1]


@pytest.fixture
def token_client(alice_key: str) -> Client:
    """A script: no cookies, no CSRF token, Alice's key in every request."""
    return Client(enforce_csrf_checks=True, headers=bearer(alice_key))


def send_json(client: Client, method: str, url: str, body: object = None, **extra):
    data = json.dumps(body) if body is not None else ""
    return getattr(client, method.lower())(url, data, content_type="application/json", **extra)


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


# --------------------------------------------------------------------------- #
# Every endpoint, every caller
# --------------------------------------------------------------------------- #

# (method, route name, takes the conversation id, body): each endpoint once, with a body that
# would change nothing if it were accepted (the conversation has a reply streaming).
ENDPOINTS = [
    ("GET", "api_conversations", False, None),
    ("POST", "api_conversations", False, {"title": "Forged"}),
    ("GET", "api_conversation", True, None),
    ("PATCH", "api_conversation", True, {"title": "Forged"}),
    ("DELETE", "api_conversation", True, None),
    ("POST", "api_messages", True, {"content": "Forged"}),
    ("POST", "api_stop", True, None),
]
ENDPOINT_IDS = [f"{method} {name}" for method, name, _, _ in ENDPOINTS]
OWN_ROUTES = {"api_conversation", "api_messages", "api_stop"}


@pytest.fixture
def busy_conversation(make_conversation) -> Conversation:
    """Alice's conversation, a reply to her secret question still streaming."""
    conversation = make_conversation(title="Alice's secret plans", history=[("user", "Secret?")])
    conversation.messages.create(
        role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, content="The secret is"
    )
    return conversation


def url_of(name: str, with_id: bool, conversation: Conversation) -> str:
    return reverse(name, args=[conversation.pk] if with_id else [])


def stored() -> list[tuple]:
    return [
        *Conversation.objects.order_by("pk").values_list("pk", "title", "owner_id"),
        *Message.objects.order_by("pk").values_list("pk", "content", "status"),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("method", "name", "with_id", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_the_owner_reaches_every_endpoint_with_a_token(
    method, name, with_id, body, busy_conversation, token_client, settings
):
    response = send_json(token_client, method, url_of(name, with_id, busy_conversation), body)

    expected = {
        "GET api_conversations": 200,
        "POST api_conversations": 201,
        "GET api_conversation": 200,
        "PATCH api_conversation": 200,
        "DELETE api_conversation": 204,
        "POST api_messages": 409,  # the streaming reply: one at a time
        "POST api_stop": 202,
    }
    assert response.status_code == expected[f"{method} {name}"]
    if response.status_code != 204:
        assert response["Content-Type"] == "application/json"
    if method == "GET":
        assert "Alice's secret plans" in response.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("method", "name", "with_id", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("credentials", ["token", "session"])
def test_another_users_conversation_is_not_found_and_left_alone(
    method, name, with_id, body, credentials, busy_conversation, bob, bob_key
):
    if credentials == "token":
        bob_client = Client(headers=bearer(bob_key))
    else:
        bob_client = Client()
        bob_client.force_login(bob)
    before = stored()

    response = send_json(bob_client, method, url_of(name, with_id, busy_conversation), body)
    missing = send_json(
        bob_client, method, url_of(name, with_id, Conversation(pk=uuid.uuid4())), body
    )

    assert "secret" not in response.content.decode().lower()
    if name in OWN_ROUTES:
        assert response.status_code == 404
        assert response.json() == missing.json()  # not "not yours": simply not there
        assert error_of(response)["code"] == "not_found"
        assert stored() == before
    elif method == "GET":
        assert response.json() == {"data": [], "next": None}  # Bob's own list: empty


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("method", "name", "with_id", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("credentials", ["none", "revoked", "unknown", "malformed"])
def test_without_valid_credentials_every_endpoint_answers_401(
    method, name, with_id, body, credentials, busy_conversation, alice
):
    token, key = ApiToken.issue(alice, "revoked")
    token.revoke()
    headers = {
        "none": {},
        "revoked": bearer(key),
        "unknown": bearer("not-a-key-anyone-was-given"),
        "malformed": {"Authorization": f"Basic {key}"},
    }[credentials]
    before = stored()

    response = send_json(
        Client(headers=headers), method, url_of(name, with_id, busy_conversation), body
    )

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert error_of(response)["code"] == "unauthorized"
    assert "secret" not in response.content.decode().lower()
    assert stored() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "name", "with_id", "body"),
    [endpoint for endpoint in ENDPOINTS if endpoint[0] != "GET"],
    ids=[i for i in ENDPOINT_IDS if not i.startswith("GET")],
)
def test_a_session_needs_the_csrf_token_for_every_change(
    method, name, with_id, body, busy_conversation, alice
):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    browser.get(reverse("home"))  # the CSRF cookie, which a forger's page cannot read
    token = browser.cookies["csrftoken"].value
    url = url_of(name, with_id, busy_conversation)
    before = stored()

    forged = send_json(browser, method, url, body)
    unchanged = stored()
    genuine = send_json(browser, method, url, body, headers={"X-CSRFToken": token})

    assert forged.status_code == 403
    assert error_of(forged)["code"] == "csrf_failed"
    assert "CSRF verification failed" in error_of(forged)["message"]
    assert unchanged == before
    assert genuine.status_code in (200, 201, 202, 204, 409)


@pytest.mark.django_db(transaction=True)
def test_a_session_reads_without_a_csrf_token(busy_conversation, alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)

    response = browser.get(reverse("api_conversation", args=[busy_conversation.pk]))

    assert response.status_code == 200
    assert response.json()["title"] == "Alice's secret plans"


# --------------------------------------------------------------------------- #
# Conversations
# --------------------------------------------------------------------------- #


@pytest.mark.django_db(transaction=True)
def test_the_list_pages_through_all_of_ones_conversations_newest_first(
    make_conversation, bob, token_client
):
    now = timezone.now()
    # Two with the very same time: the cursor must tell them apart.
    mine = [
        make_conversation(title=f"Chat {n}", updated_at=now - timedelta(minutes=n // 2))
        for n in range(7)
    ]
    make_conversation(bob, title="Bob's chat", updated_at=now)
    newest_first = sorted(mine, key=lambda c: (c.updated_at, c.pk), reverse=True)

    seen, pages, cursor = [], 0, ""
    while True:
        response = token_client.get(
            reverse("api_conversations"), {"limit": 3, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200
        page = response.json()
        seen += [item["id"] for item in page["data"]]
        pages += 1
        if not page["next"]:
            break
        cursor = page["next"]

    assert seen == [str(c.pk) for c in newest_first]
    assert pages == 3


def cursor_at(moment: str) -> str:
    return base64.urlsafe_b64encode(f"{moment}|{uuid.uuid4()}".encode()).decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"limit": "\N{SUPERSCRIPT TWO}"},  # a digit to str.isdigit, not to int()
        {"limit": "\N{ARABIC-INDIC DIGIT THREE}"},
        {"limit": " 5"},
        {"cursor": "!!not-ours"},
        {"cursor": cursor_at("2026-01-01T00:00")},
        {"cursor": cursor_at("0001-01-01T00:00:00+01:00")},  # the year 0 in UTC
        {"cursor": cursor_at("9999-12-31T23:59:59-01:00")},  # the year 10000 in UTC
    ],
    ids=[
        "zero",
        "too-many",
        "not-a-number",
        "superscript",
        "other-script",
        "space",
        "not-base64",
        "time-without-zone",
        "before-the-calendar",
        "after-the-calendar",
    ],
)
def test_a_bad_page_request_is_a_400(query, token_client):
    response = token_client.get(reverse("api_conversations"), query)

    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid"


@pytest.mark.django_db(transaction=True)
def test_a_conversation_is_created_with_its_title_and_kept_by_the_owner(alice, token_client):
    response = send_json(token_client, "POST", reverse("api_conversations"), {"title": " Plans "})

    assert response.status_code == 201
    created = Conversation.objects.get(pk=response.json()["id"])
    assert created.owner == alice
    assert created.title == response.json()["title"] == "Plans"
    assert created.metadata["title_source"] == "user"  # the model will not rename it


@pytest.mark.django_db(transaction=True)
def test_a_new_conversation_starts_from_the_users_account_defaults(alice, token_client):
    alice.default_system_prompt = "Answer in French."
    alice.save(update_fields=["default_system_prompt"])

    response = send_json(token_client, "POST", reverse("api_conversations"), {})

    created = Conversation.objects.get(pk=response.json()["id"])
    assert created.system_prompt == "Answer in French."
    assert response.json()["model"] == created.metadata["model"]
    assert response.json()["pinned"] is False
    assert response.json()["archived"] is False


@pytest.mark.django_db(transaction=True)
def test_reading_a_conversation_gives_its_current_messages_in_order(conversation, token_client):
    question, answer = conversation.messages.order_by("created_at")
    old_answer = conversation.messages.create(
        role="assistant", content="Try Porto.", created_at=question.created_at, superseded_by=answer
    )

    body = token_client.get(reverse("api_conversation", args=[conversation.pk])).json()

    assert body["id"] == str(conversation.pk)
    assert body["title"] == "Trip planning"
    assert [(m["role"], m["content"], m["status"]) for m in body["messages"]] == [
        ("user", "Where should I go in May?", "complete"),
        ("assistant", "Try **Lisbon**.", "complete"),
    ]
    assert str(old_answer.pk) not in json.dumps(body)


@pytest.mark.django_db(transaction=True)
def test_renaming_and_deleting(conversation, token_client):
    url = reverse("api_conversation", args=[conversation.pk])

    renamed = send_json(token_client, "PATCH", url, {"title": "Lisbon in May"})
    conversation.refresh_from_db()
    deleted = send_json(token_client, "DELETE", url)
    gone = token_client.get(url)

    assert renamed.status_code == 200
    assert renamed.json()["title"] == conversation.title == "Lisbon in May"
    assert deleted.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert gone.status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "name", "body", "status", "code"),
    [
        ("PATCH", "api_conversation", {}, 400, "invalid"),
        ("PATCH", "api_conversation", {"title": 42}, 400, "invalid"),
        ("PATCH", "api_conversation", {"title": "x" * 201}, 400, "invalid"),
        ("PATCH", "api_conversation", ["title"], 400, "invalid_json"),
        ("POST", "api_messages", {}, 400, "invalid"),
        ("POST", "api_messages", {"content": "   "}, 400, "invalid"),
        ("POST", "api_messages", {"content": "a\x00b"}, 400, "invalid"),
        ("POST", "api_messages", {"content": "x" * 51}, 413, "message_too_long"),
        ("POST", "api_conversations", {"content": "x" * 51}, 413, "message_too_long"),
        ("POST", "api_conversations", {"title": None, "content": ""}, 400, "invalid"),
    ],
)
def test_invalid_requests_are_refused_with_the_reason_and_change_nothing(
    method, name, body, status, code, conversation, token_client, settings
):
    settings.CHAT_MAX_MESSAGE_CHARS = 50
    url = reverse(name, args=[] if name == "api_conversations" else [conversation.pk])
    before = stored()

    response = send_json(token_client, method, url, body)

    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert error_of(response)["message"]
    assert stored() == before


@pytest.mark.django_db(transaction=True)
def test_a_body_that_is_not_json_is_a_400(conversation, token_client):
    response = token_client.post(
        reverse("api_messages", args=[conversation.pk]), "content=hi", content_type="text/plain"
    )

    assert response.status_code == 400
    assert error_of(response) == {
        "code": "invalid_json",
        "message": "The request body is not valid JSON.",
    }


@pytest.mark.django_db(transaction=True)
def test_a_message_too_long_says_by_how_much(conversation, token_client, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10

    response = send_json(
        token_client, "POST", reverse("api_messages", args=[conversation.pk]), {"content": "x" * 12}
    )

    assert response.status_code == 413
    assert error_of(response)["message"] == "This message is 12 characters long; the limit is 10."


@pytest.mark.django_db(transaction=True)
def test_a_method_an_endpoint_does_not_take_is_a_405_naming_those_it_does(token_client):
    response = token_client.put(reverse("api_conversations"))

    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    assert error_of(response)["code"] == "method_not_allowed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/v1/nothing", "/api/v2/conversations", "/api/"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_api_paths_are_a_json_404(path, method, token_client):
    response = send_json(token_client, method, path)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.django_db(transaction=True)
def test_a_second_message_while_a_reply_streams_is_a_409(busy_conversation, token_client):
    before = stored()

    response = send_json(
        token_client,
        "POST",
        reverse("api_messages", args=[busy_conversation.pk]),
        {"content": "And another thing"},
    )

    assert response.status_code == 409
    assert error_of(response) == {
        "code": "reply_in_progress",
        "message": "Wait for the current reply to finish, or stop it, first.",
    }
    assert stored() == before


@pytest.mark.django_db(transaction=True)
def test_stopping_when_nothing_streams_says_so(conversation, token_client):
    response = send_json(token_client, "POST", reverse("api_stop", args=[conversation.pk]))

    assert response.status_code == 200
    assert response.json() == {"reply_id": None, "stopping": False}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_asking_for_json_waits_for_the_whole_reply(alice, fake_openai, alice_key):
    fake_openai.script(Reply(chunks=["Lisbon ", "in ", "May."], delay=0.01))
    # As under daphne: the request's synchronous work has a thread of its own, which the
    # generation, answering while the request waits, must not need.
    async with ThreadSensitiveContext():
        response = await AsyncClient().post(
            reverse("api_conversations"),
            json.dumps({"content": "Where should I go?"}),
            content_type="application/json",
            headers={**bearer(alice_key), "Accept": "application/json"},
        )
        # That thread's connection: the test client leaves connections open after a request.
        await sync_to_async(connections.close_all)()

    assert response.status_code == 201
    body = response.json()
    reply = await Message.objects.aget(pk=body["reply"]["id"])
    assert body["message"]["content"] == "Where should I go?"
    assert body["reply"]["status"] == reply.status == "complete"
    assert body["reply"]["content"] == reply.content == "Lisbon in May."
    assert body["reply"]["usage"]["completion_tokens"] > 0
    assert body["conversation"]["title"] == "Where should I go?"


# --------------------------------------------------------------------------- #
# The schema and its page
# --------------------------------------------------------------------------- #


def _api_routes(patterns: list, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        pattern = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _api_routes(entry.url_patterns, pattern)
        elif isinstance(entry, URLPattern) and pattern.startswith("api/v1/"):
            yield pattern, entry


def test_the_schema_describes_every_api_route_and_method_and_nothing_else() -> None:
    described = {
        (path, method.upper())
        for path, item in schema()["paths"].items()
        for method in item
        if method != "parameters"
    }
    served = set()
    for pattern, entry in _api_routes(get_resolver().url_patterns):
        path = "/" + pattern.replace("<uuid:conversation_id>", "{conversation_id}")
        for method in getattr(entry.callback, "api_methods", ("GET",)):
            served.add((path, method))

    assert served == described


def test_the_schema_is_served_as_openapi_json(client) -> None:
    response = client.get(reverse("api_openapi"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["openapi"] == "3.1.0"
    assert response.json() == schema()


@pytest.mark.django_db(transaction=True)
def test_the_docs_page_shows_each_endpoint_with_a_curl_example(client) -> None:
    page = client.get(reverse("api_docs")).content.decode()

    for item in schema()["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert f'id="{operation["operationId"]}"' in page
            assert operation["summary"] in page
    assert "curl -N -X POST http://testserver/api/v1/conversations/" in page
    assert "Accept: text/event-stream" in page
    assert "Authorization: Bearer $CHATSITE_TOKEN" in page


# --------------------------------------------------------------------------- #
# Replies streamed over real HTTP
# --------------------------------------------------------------------------- #

MODEL_KEY = "sk-api-tests"
WORDS = [f"w{n} " for n in range(60)]
FULL_TEXT = "".join(WORDS)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=MODEL_KEY) as server:
        yield server


@pytest.fixture
def model(upstream: FakeOpenAI) -> FakeOpenAI:
    upstream.reset()
    upstream.default = Reply(text="A reply nobody scripted")
    return upstream


@pytest.fixture(scope="module")
def server(django_db_setup, upstream: FakeOpenAI) -> Iterator[Daphne]:
    env = {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": MODEL_KEY,
        "OPENAI_MAX_RETRIES": "0",
        "CHAT_DEFAULT_MODEL": "fake-model",
        "CHAT_AUTO_TITLE": "0",
        "CHAT_FLUSH_SECONDS": "0.2",
        "CHAT_API_KEEPALIVE_SECONDS": "0.3",
    }
    with Daphne("api", **env) as daphne:
        yield daphne


@dataclass
class EventStream:
    """Server-sent events as a client reads them: events in order, and comments."""

    events: list[tuple[str, dict]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[dict]:
        return [data for event, data in self.events if event == kind]

    @property
    def text(self) -> str:
        return "".join(delta["text"] for delta in self.of("delta"))


def read_events(response: httpx2.Response, stop_after: Callable[[EventStream], bool]):
    stream, event, data = EventStream(), "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            stream.comments.append(line[1:].strip())
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            stream.events.append((event, json.loads("\n".join(data))))
            event, data = "message", []
            if stop_after(stream):
                break
    return stream


def post_and_read(
    server: Daphne,
    key: str,
    path: str,
    body: dict,
    stop_after: Callable[[EventStream], bool] = lambda stream: False,
) -> tuple[httpx2.Response, EventStream]:
    with httpx2.Client(base_url=server.url, timeout=30) as http:
        with http.stream("POST", path, json=body, headers=bearer(key)) as response:
            return response, read_events(response, stop_after)


def wait_until_finished(reply_id: str, timeout: float = 20) -> Message:
    deadline = timezone.now() + timedelta(seconds=timeout)
    while timezone.now() < deadline:
        reply = Message.objects.get(pk=reply_id)
        if not reply.is_streaming:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"reply {reply_id} still streaming after {timeout}s")


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_reply_streams_as_events_whose_deltas_make_up_the_stored_reply(
    server, model, alice, alice_key
):
    conversation = Conversation.objects.create(owner=alice, title="Counting")
    model.script(Reply(chunks=WORDS, delay=0.01, first_byte_delay=1.0))

    response, stream = post_and_read(
        server, alice_key, f"/api/v1/conversations/{conversation.pk}/messages", {"content": "Count"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    kinds = [event for event, _ in stream.events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"delta"}
    start, done = stream.of("start")[0], stream.of("done")[0]
    reply = Message.objects.get(pk=start["reply"]["id"])
    question = Message.objects.get(pk=start["message"]["id"])
    assert question.content == "Count" and question.conversation == conversation
    assert stream.text == reply.content == done["content"] == FULL_TEXT
    assert done["status"] == reply.status == "complete"
    assert done["usage"] == reply.usage and done["usage"]["completion_tokens"] > 0
    assert "keep-alive" in stream.comments  # the model took a second to start


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_conversation_created_with_a_message_streams_its_reply(server, model, alice_key):
    model.script(Reply(text="Lisbon, in May."))

    response, stream = post_and_read(
        server, alice_key, "/api/v1/conversations", {"content": "Where in May?"}
    )

    assert response.status_code == 200
    conversation = Conversation.objects.get(pk=stream.of("start")[0]["conversation"]["id"])
    assert conversation.title == "Where in May?"
    assert stream.text == stream.of("done")[0]["content"] == "Lisbon, in May."
    assert conversation.messages.get(role="assistant").content == "Lisbon, in May."


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_client_that_hangs_up_midway_does_not_stop_the_reply(server, model, alice, alice_key):
    conversation = Conversation.objects.create(owner=alice)
    model.script(Reply(chunks=WORDS, delay=0.03))

    _, stream = post_and_read(
        server,
        alice_key,
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": "Count"},
        stop_after=lambda stream: len(stream.text) > 20,
    )
    reply = wait_until_finished(stream.of("start")[0]["reply"]["id"])

    assert stream.of("done") == []
    assert FULL_TEXT.startswith(stream.text)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == FULL_TEXT


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_an_upstream_failure_ends_the_stream_with_the_error_and_the_text_so_far(
    server, model, alice, alice_key
):
    conversation = Conversation.objects.create(owner=alice)
    model.script(Reply(chunks=WORDS, delay=0.01, drop_after=10))

    _, stream = post_and_read(
        server, alice_key, f"/api/v1/conversations/{conversation.pk}/messages", {"content": "Hi"}
    )

    done = stream.of("done")[0]
    reply = Message.objects.get(pk=done["id"])
    assert done["status"] == reply.status == "error"
    assert stream.text == done["content"] == reply.content == "".join(WORDS[:10])
    assert done["error"] == reply.error_text and done["error"]


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_reply_stopped_through_the_api_ends_the_stream_as_stopped(
    server, model, alice, alice_key
):
    conversation = Conversation.objects.create(owner=alice)
    model.script(Reply(chunks=WORDS, delay=0.05))
    stop_answers = []

    def stop_once_some_text_arrived(stream: EventStream) -> bool:
        if len(stream.text) > 15 and not stop_answers:
            stop_answers.append(
                httpx2.post(
                    f"{server.url}/api/v1/conversations/{conversation.pk}/stop",
                    headers=bearer(alice_key),
                )
            )
        return False

    _, stream = post_and_read(
        server,
        alice_key,
        f"/api/v1/conversations/{conversation.pk}/messages",
        {"content": "Count"},
        stop_after=stop_once_some_text_arrived,
    )

    done = stream.of("done")[0]
    reply = Message.objects.get(pk=done["id"])
    assert stop_answers[0].status_code == 202
    assert stop_answers[0].json() == {"reply_id": done["id"], "stopping": True}
    assert done["status"] == reply.status == "stopped"
    assert stream.text == done["content"] == reply.content
    assert 15 < len(reply.content) < len(FULL_TEXT)


# --------------------------------------------------------------------------- #
# Hostile text
# --------------------------------------------------------------------------- #


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_hostile_text_comes_back_as_json_never_as_html(payload, make_conversation, token_client):
    conversation = make_conversation(
        title=payload[:TITLE_MAX_LENGTH], history=[("user", payload), ("assistant", payload)]
    )

    detail = token_client.get(reverse("api_conversation", args=[conversation.pk]))
    listing = token_client.get(reverse("api_conversations"))

    for response in (detail, listing):
        assert response["Content-Type"] == "application/json"
        assert response["X-Content-Type-Options"] == "nosniff"
    assert [m["content"] for m in detail.json()["messages"]] == [payload, payload]
    assert listing.json()["data"][0]["title"] == payload[:TITLE_MAX_LENGTH].strip()


@pytest.mark.live
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_the_docs_page_shows_the_schemas_text_as_text(payload, client, monkeypatch):
    hostile = schema()
    hostile["info"]["title"] = payload
    operation = hostile["paths"]["/api/v1/conversations"]["get"]
    operation["summary"] = payload
    operation["description"] = payload
    operation["parameters"][0]["description"] = payload
    operation["responses"]["200"]["description"] = payload
    monkeypatch.setattr(api_docs, "schema", lambda: hostile)

    page = assert_inert(client.get(reverse("api_docs")).content.decode())

    section = page.by_id("listConversations")
    assert section.all(class_name="api-summary")[0].text() == payload
    assert payload in page.all("h1")[0].text()


def test_the_schema_refuses_another_method_with_json(client) -> None:
    response = client.post(reverse("api_openapi"))

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_forged_post_under_the_api_is_refused_with_json(alice) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)

    response = browser.post(reverse("api_openapi"))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert response.json()["error"]["message"].startswith("CSRF verification failed")


def test_a_forged_post_to_a_page_still_gets_djangos_page(alice) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)

    response = browser.post(reverse("conversation_start"))

    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
