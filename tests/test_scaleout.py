"""Replies across real daphne processes: watched and stopped from another process, and
surviving a process killed mid-reply.

The scale-out tests need what several processes share in production, PostgreSQL and Redis
(CI runs them with DATABASE_URL and REDIS_URL set); the crash test runs on any database.
"""

import asyncio
import time

import pytest
from django.conf import settings
from django.test import Client

from conversations.models import Conversation, Message
from tests.fake_openai import FakeOpenAI, Reply
from tests.live import ChatClient, Daphne, ReplyWatcher, watch_until_finished

pytestmark = pytest.mark.django_db(transaction=True)

API_KEY = "sk-scaleout-tests"
# 120 numbered words, 40 ms apart: about five seconds, long enough to join and stop midway.
WORDS = [f"w{n} " for n in range(120)]
FULL_TEXT = "".join(WORDS)

shared_services = pytest.mark.skipif(
    not (settings.REDIS_URL and settings.DATABASES["default"]["ENGINE"].endswith("postgresql")),
    reason="several processes share state through PostgreSQL and Redis: set DATABASE_URL and "
    "REDIS_URL",
)


@pytest.fixture
def model():
    with FakeOpenAI(api_key=API_KEY) as server:
        server.default = Reply(chunks=WORDS, delay=0.04)
        yield server


def server_env(model: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_MAX_RETRIES": "0",
        "CHAT_DEFAULT_MODEL": "fake-model",
        "CHAT_FLUSH_SECONDS": "0.2",
        "CHAT_AUTO_TITLE": "0",
        **extra,
    }


def session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def streaming_reply(conversation: Conversation) -> Message:
    wait_for(
        lambda: conversation.messages.filter(status=Message.Status.STREAMING).exists(),
        what="a streaming reply",
    )
    return conversation.messages.get(status=Message.Status.STREAMING)


def flushed_some_text(reply: Message) -> bool:
    reply.refresh_from_db()
    return bool(reply.content)


@shared_services
def test_a_reply_generated_by_one_process_is_watched_midway_through_another(alice, model):
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    with Daphne("a", **server_env(model)) as a, Daphne("b", **server_env(model)) as b:
        via_a, via_b = ChatClient(a, key), ChatClient(b, key)

        async def scenario() -> tuple[ReplyWatcher, ReplyWatcher, str]:
            watcher_a, watcher_b = ReplyWatcher(), ReplyWatcher()
            async with via_a.websocket(conversation.pk) as socket_a:
                response = await asyncio.to_thread(
                    via_a.post, f"/c/{conversation.pk}/messages/", {"text": "Count, slowly"}
                )
                assert response.status_code == 200
                while not watcher_a.status:
                    watcher_a.feed(await socket_a.recv())
                reply_id = next(iter(watcher_a.status))
                # Join through B once A has streamed a good part of the reply.
                while len(watcher_a.text.get(reply_id, "")) < len(FULL_TEXT) // 3:
                    watcher_a.feed(await socket_a.recv())
                async with via_b.websocket(conversation.pk, last=reply_id) as socket_b:
                    await asyncio.gather(
                        watch_until_finished(socket_a, watcher_a, reply_id),
                        watch_until_finished(socket_b, watcher_b, reply_id),
                    )
            return watcher_a, watcher_b, reply_id

        watcher_a, watcher_b, reply_id = asyncio.run(scenario())

    reply = Message.objects.get(pk=reply_id)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == FULL_TEXT
    assert watcher_a.text[reply_id] == FULL_TEXT
    assert watcher_b.text[reply_id] == FULL_TEXT
    assert watcher_b.status[reply_id] == "complete"


@shared_services
def test_stop_sent_through_another_process_stops_the_generation(alice, model):
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    with Daphne("a", **server_env(model)) as a, Daphne("b", **server_env(model)) as b:
        via_a, via_b = ChatClient(a, key), ChatClient(b, key)
        assert via_a.post(f"/c/{conversation.pk}/messages/", {"text": "Go"}).status_code == 200
        reply = streaming_reply(conversation)

        async def scenario() -> ReplyWatcher:
            watcher = ReplyWatcher()
            async with via_b.websocket(conversation.pk, last=str(reply.pk)) as socket_b:
                while len(watcher.text.get(str(reply.pk), "")) < len(FULL_TEXT) // 4:
                    watcher.feed(await socket_b.recv())
                response = await asyncio.to_thread(via_b.post, f"/c/{conversation.pk}/stop/")
                assert response.status_code == 204
                await watch_until_finished(socket_b, watcher, str(reply.pk))
            return watcher

        watcher = asyncio.run(scenario())

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOPPED
    assert 0 < len(reply.content) < len(FULL_TEXT)
    assert FULL_TEXT.startswith(reply.content)
    assert watcher.text[str(reply.pk)] == reply.content
    # The upstream stream was closed by the generating process, not read to its end.
    wait_for(lambda: model.disconnects_mid_response >= 1, what="the upstream stream to close")


def test_a_reply_of_a_killed_process_is_marked_interrupted_and_the_chat_goes_on(alice, model):
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    env = server_env(model, CHAT_STALE_SECONDS="2")
    with Daphne("doomed", **env) as doomed:
        response = ChatClient(doomed, key).post(
            f"/c/{conversation.pk}/messages/", {"text": "Tell me a long story"}
        )
        assert response.status_code == 200
        reply = streaming_reply(conversation)
        wait_for(lambda: flushed_some_text(reply), what="a first flush")
        doomed.kill()
    reply.refresh_from_db()
    prefix = reply.content
    assert reply.status == Message.Status.STREAMING
    assert prefix and FULL_TEXT.startswith(prefix)

    with Daphne("survivor", **env) as survivor:
        via_survivor = ChatClient(survivor, key)

        async def watch() -> ReplyWatcher:
            watcher = ReplyWatcher()
            async with via_survivor.websocket(conversation.pk, last=str(reply.pk)) as socket:
                await watch_until_finished(socket, watcher, str(reply.pk))
            return watcher

        watcher = asyncio.run(watch())
        assert watcher.status[str(reply.pk)] == "interrupted"
        reply.refresh_from_db()
        assert reply.status == Message.Status.INTERRUPTED
        assert reply.content == prefix

        # The conversation is usable: the next message gets a complete reply.
        model.default = Reply(text="Back on track.")
        response = via_survivor.post(f"/c/{conversation.pk}/messages/", {"text": "Again?"})
        assert response.status_code == 200
        wait_for(
            lambda: conversation.messages.filter(
                status=Message.Status.COMPLETE, content="Back on track."
            ).exists(),
            what="the next reply",
        )
