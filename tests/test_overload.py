"""Holding many replies with few database connections, and refusing what a process cannot take:
at once, with an answer the caller can use, never by a timeout.

The pool test runs a real daphne with DATABASE_POOL_MAX=2 (on PostgreSQL; SQLite has no pool,
and the same test then shows the process holds 100 replies at once on it too).
"""

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from django.http import HttpResponse
from django.test import AsyncClient, Client
from django.urls import reverse
from psycopg_pool import PoolTimeout

from accounts.models import ApiToken, User
from conversations import errors
from conversations.api import views as api
from conversations.models import Conversation, Message
from conversations.replies import running, stop
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import ChatClient, Daphne, ReplyWatcher, watch_until_finished
from tests.support.replies import wait_for_reply

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}
API_KEY = "sk-overload-tests"
WORDS = [f"w{n} " for n in range(20)]
FULL_TEXT = "".join(WORDS)
STREAMS = 50


def people_with_tokens(count: int) -> list[tuple[str, str, Conversation]]:
    """`count` users, each with a signed-in session, an API token and a conversation."""
    people = []
    for n in range(count):
        user = User.objects.create_user(f"crowd{n}@example.com")  # no password: no hashing
        client = Client()
        client.force_login(user)
        _, key = ApiToken.issue(user, "load")
        conversation = Conversation.objects.create(owner=user, title=f"Crowd {n}")
        people.append((client.cookies["sessionid"].value, key, conversation))
    return people


async def api_reply(server: Daphne, key: str, conversation: Conversation) -> tuple[str, dict]:
    """Send a message through the API and read the whole event stream: (text, done event)."""
    text, done = "", {}
    async with httpx2.AsyncClient(base_url=server.url, timeout=60) as http:
        async with http.stream(
            "POST",
            f"/api/v1/conversations/{conversation.pk}/messages",
            json={"content": "Count"},
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            assert response.status_code == 200, await response.aread()
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "delta":
                    text += json.loads(line.removeprefix("data: "))["text"]
                elif line.startswith("data: ") and event == "done":
                    done = json.loads(line.removeprefix("data: "))
    return text, done


def patient(server: Daphne, session: str) -> ChatClient:
    """A browser that waits for an answer as long as a person would, not httpx's 5 seconds:
    a hundred requests share two database connections on a machine that is busy serving them."""
    client = ChatClient(server, session)
    client.http.timeout = httpx2.Timeout(60)
    return client


async def page_reply(client: ChatClient, socket, conversation: Conversation) -> ReplyWatcher:
    """Send a message as the chat page does, and watch its reply on the page's open socket."""
    watcher = ReplyWatcher()
    response = await asyncio.to_thread(
        client.post, f"/c/{conversation.pk}/messages/", {"text": "Count"}
    )
    assert response.status_code == 200
    while not watcher.status:
        watcher.feed(await socket.recv())
    reply_id = next(iter(watcher.status))
    await watch_until_finished(socket, watcher, reply_id, timeout=60)
    return watcher


@pytest.mark.live
def test_a_pool_of_two_connections_serves_50_api_and_50_page_replies_at_once():
    with FakeOpenAI(api_key=API_KEY) as model:
        # Every reply streams for a second: all hundred are streaming together.
        model.default = Reply(chunks=WORDS, delay=0.05)
        people = people_with_tokens(2 * STREAMS)
        env = {
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_MAX_RETRIES": "0",
            "CHAT_DEFAULT_MODEL": "fake-model",
            "CHAT_AUTO_TITLE": "0",
            "DATABASE_POOL_MAX": "2",
        }
        with Daphne("pool-of-two", **env) as server:

            async def everyone() -> list:
                pages = [(patient(server, session), c) for session, _, c in people[STREAMS:]]
                async with contextlib.AsyncExitStack() as open_pages:
                    # The pages are open, as a browser's are before their user sends.
                    sockets = [
                        await open_pages.enter_async_context(client.websocket(c.pk))
                        for client, c in pages
                    ]
                    # The pages' POSTs go out from threads: enough for all of them at once.
                    threads = ThreadPoolExecutor(max_workers=STREAMS)
                    asyncio.get_running_loop().set_default_executor(threads)
                    by_api = [api_reply(server, key, c) for _, key, c in people[:STREAMS]]
                    by_page = [
                        page_reply(client, socket, c)
                        for (client, c), socket in zip(pages, sockets, strict=True)
                    ]
                    return await asyncio.gather(*by_api, *by_page)

            results = asyncio.run(everyone())
        log = server.log.read_text()

    assert "couldn't get a connection" not in log
    for (text, done), (_, _, conversation) in zip(results[:STREAMS], people[:STREAMS], strict=True):
        assert text == FULL_TEXT
        assert done["status"] == "complete" and done["content"] == FULL_TEXT
        reply = conversation.messages.get(role=Message.Role.ASSISTANT)
        assert (reply.status, reply.content) == (Message.Status.COMPLETE, FULL_TEXT)
    for watcher, (_, _, conversation) in zip(results[STREAMS:], people[STREAMS:], strict=True):
        reply = conversation.messages.get(role=Message.Role.ASSISTANT)
        assert (reply.status, reply.content) == (Message.Status.COMPLETE, FULL_TEXT)
        assert watcher.text[str(reply.pk)] == FULL_TEXT
        assert conversation.messages.get(role=Message.Role.USER).content == "Count"


@pytest.fixture
def stalled_model(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """A model that starts every reply and then goes quiet: replies stay streaming."""
    fake_openai.default = Reply(chunks=WORDS, stall_after=1, stall_seconds=30)
    return fake_openai


@pytest.fixture
def token_of_alice(alice) -> str:
    return ApiToken.issue(alice, "tests")[1]


async def post_to_api(key: str, body: dict, path: str = "") -> HttpResponse:
    return await AsyncClient().post(
        path or reverse("api_conversations"),
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


async def stop_all() -> None:
    for reply_id in list(running.generations):
        await stop.request_stop(reply_id)
        await wait_for_reply(reply_id)


@pytest.mark.asyncio
async def test_a_reply_past_the_process_cap_is_refused_at_once_as_json_503(
    settings, stalled_model, alice, token_of_alice
):
    settings.CHAT_MAX_REPLIES = 2
    try:
        accepted = [await post_to_api(token_of_alice, {"content": f"Q{n}"}) for n in range(2)]
        started = time.monotonic()
        refused = await post_to_api(token_of_alice, {"content": "One too many"})
        waited = time.monotonic() - started
    finally:
        await stop_all()

    assert [response.status_code for response in accepted] == [200, 200]
    assert refused.status_code == 503
    assert refused["Content-Type"] == "application/json"
    assert int(refused["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "busy"
    assert "try again" in refused.json()["error"]["message"]
    assert waited < 2  # refused, not timed out
    # Nothing of the refused message was stored: no conversation, no message.
    assert not await Message.objects.filter(content="One too many").aexists()
    assert await Conversation.objects.filter(owner=alice).acount() == 2


@pytest.mark.asyncio
async def test_a_page_past_the_process_cap_says_so_and_keeps_the_text(
    settings, stalled_model, alice_async_client, conversation
):
    settings.CHAT_MAX_REPLIES = 1
    other = await Conversation.objects.acreate(owner=conversation.owner, title="Other")
    try:
        first = await alice_async_client.post(
            reverse("message_send", args=[other.pk]), {"text": "Busy now"}, headers=HTMX
        )
        refused = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]),
            {"text": "Please keep this text"},
            headers=HTMX,
        )
    finally:
        await stop_all()

    assert first.status_code == 200
    page = refused.content.decode()
    assert refused.status_code == 503 and int(refused["Retry-After"]) > 0
    assert "The server is busy with other replies right now" in page
    assert 'id="composer-errors"' in page
    # Only the reason is swapped in: the composer, and the text typed in it, stay as they are.
    assert refused["HX-Reswap"] == "none"
    assert not await conversation.messages.filter(content="Please keep this text").aexists()


@pytest.mark.asyncio
async def test_a_place_is_free_again_once_a_reply_ends(
    settings, stalled_model, alice, token_of_alice
):
    settings.CHAT_MAX_REPLIES = 1
    first = await post_to_api(token_of_alice, {"content": "First"})
    await stop_all()
    second = await post_to_api(token_of_alice, {"content": "Second"})
    await stop_all()

    assert (first.status_code, second.status_code) == (200, 200)
    assert running.replies_in_progress() == 0


def out_of_connections(*args, **kwargs):
    """What Django raises when the pool has no connection to give within its timeout."""
    try:
        raise PoolTimeout("couldn't get a connection after 10.00 sec")
    except PoolTimeout as cause:
        raise OperationalError(str(cause)) from cause


def test_an_api_error_is_json_even_a_500(alice, token_of_alice, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    Conversation.objects.create(owner=alice)
    monkeypatch.setattr(api, "conversation_json", broken)
    client = Client(raise_request_exception=False)

    response = client.get(
        reverse("api_conversations"), headers={"Authorization": f"Bearer {token_of_alice}"}
    )

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "server_error"
    assert "a bug" not in response.content.decode()  # nothing of the server's insides


def test_running_out_of_database_connections_is_a_json_503_for_the_api(
    alice, token_of_alice, monkeypatch
):
    Conversation.objects.create(owner=alice)
    monkeypatch.setattr(api, "conversation_json", out_of_connections)
    client = Client(raise_request_exception=False)

    response = client.get(
        reverse("api_conversations"), headers={"Authorization": f"Bearer {token_of_alice}"}
    )

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "busy"


def test_running_out_of_database_connections_keeps_the_composers_text(
    alice_client, conversation, monkeypatch
):
    from conversations.views import chat as views

    monkeypatch.setattr(views, "get_conversation_for_user", out_of_connections)
    alice_client.raise_request_exception = False

    response = alice_client.get(conversation.get_absolute_url(), headers=HTMX)

    assert response.status_code == 503
    assert response["HX-Reswap"] == "none"  # the page keeps what it shows, the text typed too
    assert 'id="composer-errors"' in response.content.decode()
    assert "too busy" in response.content.decode()


def test_an_unknown_error_outside_the_api_is_the_sites_error_page(alice_client, monkeypatch):
    from conversations.views import chat as views

    monkeypatch.setattr(views, "_chat_context", lambda *args, **kwargs: 1 / 0)
    alice_client.raise_request_exception = False

    response = alice_client.get(reverse("home"))

    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


def test_the_overload_check_looks_through_djangos_wrapping():
    with pytest.raises(OperationalError) as raised:
        out_of_connections()

    assert errors.is_overload(raised.value)
    assert not errors.is_overload(OperationalError("server closed the connection"))
    assert not errors.is_overload(None)


@pytest.mark.asyncio
async def test_a_streaming_api_response_holds_no_database_connection(
    settings, fake_openai, alice, token_of_alice, monkeypatch
):
    """While the reply streams, the response waits on the generator, not on the database."""
    fake_openai.default = Reply(chunks=WORDS, delay=0.02)
    released = []
    original = api.release_connection

    async def watched_release() -> None:
        await original()
        released.append(await sync_to_async(lambda: _connection_is_closed())())

    monkeypatch.setattr(api, "release_connection", watched_release)
    conversation = await Conversation.objects.acreate(owner=alice)

    response = await post_to_api(
        token_of_alice, {"content": "Hi"}, reverse("api_messages", args=[conversation.pk])
    )
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()

    assert "event: done" in body
    assert released == [_expected_closed()]


def _connection_is_closed() -> bool:
    from django.db import connection

    return connection.connection is None


def _expected_closed() -> bool:
    # Closed on a server database; SQLite keeps its file open (no pool to give it back to).
    from django.db import connection

    return connection.vendor != "sqlite"


@pytest.mark.asyncio
async def test_a_page_that_misses_a_turn_for_want_of_a_connection_catches_up(
    settings, fake_openai, alice_async_client, conversation, open_socket, monkeypatch
):
    """The socket stays open when the database has no connection to spare for an event, and
    the page is sent the conversation as it stands at its next check."""
    from conversations.sockets import consumers

    settings.CHAT_STALE_SECONDS = 3  # checks every second
    fake_openai.script(Reply(text="Here it is."))
    socket = await open_socket(conversation)
    monkeypatch.setattr(consumers, "_render_turn", out_of_connections)

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "Hello"}, headers=HTMX
    )
    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")
    final = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    assert socket.connected
    assert "Here it is." in final
    assert "Hello" in "".join(socket.frames)  # the question came with the caught-up list
