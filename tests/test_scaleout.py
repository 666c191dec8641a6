"""Replies across real daphne processes: watched and stopped from another process, surviving a
process killed mid-reply, never overwritten by a process that was paused mid-reply, and ended
cleanly by a process stopped with SIGTERM.

The scale-out tests need what several processes share in production, PostgreSQL and Redis
(CI runs them with DATABASE_URL and REDIS_URL set); the tests of a lone process (killed,
restarted) run on any database.
"""

import asyncio
import signal
import time

import httpx2
import pytest

from accounts.models import ApiToken
from conversations.models import Conversation, Message
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import (
    ChatClient,
    Daphne,
    ReplyWatcher,
    api_reply,
    flushed_some_text,
    server_env,
    session_key,
    streaming_reply,
    wait_for,
    watch_until_finished,
)
from tests.support.scaleout import API_KEY, FULL_TEXT, WORDS, shared_services

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def model():
    with FakeOpenAI(api_key=API_KEY) as server:
        server.default = Reply(chunks=WORDS, delay=0.04)
        yield server


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


def stored_text(reply: Message) -> str:
    reply.refresh_from_db()
    return reply.content


def send_once_accepted(
    server: Daphne, key: str, conversation: Conversation, text: str, *, patient: bool = True
) -> dict:
    """Send a message through the API and return the finished turn. `patient`: send it again
    while a reply is in progress (409), as a user would."""
    url = f"{server.url}/api/v1/conversations/{conversation.pk}/messages"
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    deadline = time.monotonic() + 20
    while True:
        response = httpx2.post(url, json={"content": text}, headers=headers, timeout=30)
        if response.status_code != 409 or not patient or time.monotonic() > deadline:
            assert response.status_code == 201, response.text
            return response.json()
        time.sleep(0.2)


@shared_services
def test_a_paused_process_that_comes_back_never_overwrites_the_conversation(alice, model):
    conversation = Conversation.objects.create(owner=alice)
    _, key = ApiToken.issue(alice, "tests")
    first_part = "".join(WORDS[:10])
    # Ten words, then a silence during which the process is paused, then the rest at once: the
    # process finds it waiting on its socket when it comes back.
    model.default = Reply(
        chunks=[*WORDS[:10], "".join(WORDS[10:])], delay=0.04, stall_after=10, stall_seconds=4
    )
    env = server_env(model, CHAT_STALE_SECONDS="2")
    with Daphne("paused", **env) as paused, Daphne("other", **env) as other:
        stream, reply = api_reply(paused, key, conversation, "Tell me a long story")
        wait_for(
            lambda: stream.text == first_part and stored_text(reply) == first_part,
            what="the first ten words, stored and sent",
        )
        rest_sent_by = time.monotonic() + 4 + 0.5
        paused.pause()
        try:
            # The paused reply falls silent; once it is taken for dead, the conversation goes on
            # through the other process.
            model.default = Reply(text="A new answer.")
            new_turn = send_once_accepted(other, key, conversation, "Are you there?")
            reply.refresh_from_db()
            assert reply.status == Message.Status.INTERRUPTED
            # Still paused while the model sends it the rest of the reply.
            time.sleep(max(0.0, rest_sent_by - time.monotonic()))
        finally:
            paused.resume()
        # The paused generator wakes up, finds the reply is no longer its own, and ends.
        final_event, final = stream.final_event()

    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.INTERRUPTED, first_part)
    assert new_turn["reply"]["status"] == "complete"
    assert list(conversation.messages.values_list("role", "status", "content")) == [
        ("user", "complete", "Tell me a long story"),
        ("assistant", "interrupted", first_part),
        ("user", "complete", "Are you there?"),
        ("assistant", "complete", "A new answer."),
    ]
    # Its API client was sent nothing more once it came back, not the text the model sent it
    # meanwhile: the reply as it had it is the reply as stored.
    assert stream.text == first_part
    assert (final_event, final["status"], final["content"]) == ("done", "interrupted", first_part)


@shared_services
def test_a_reply_slow_to_start_is_not_taken_for_dead_by_another_process(alice, model):
    """Its generator beats while the model is silent, however long the first token takes."""
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    model.default = Reply(text="Finally, an answer.", first_byte_delay=3)
    env = server_env(model, CHAT_STALE_SECONDS="1")
    with Daphne("slow", **env) as slow, Daphne("watching", **env) as watching:
        response = ChatClient(slow, key).post(f"/c/{conversation.pk}/messages/", {"text": "Hm?"})
        assert response.status_code == 200
        reply = streaming_reply(conversation)

        async def watch() -> ReplyWatcher:
            # An open page makes the other process look for dead replies every second.
            watcher = ReplyWatcher()
            async with ChatClient(watching, key).websocket(conversation.pk, str(reply.pk)) as page:
                await watch_until_finished(page, watcher, str(reply.pk))
            return watcher

        watcher = asyncio.run(watch())

    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, "Finally, an answer.")
    assert watcher.status[str(reply.pk)] == "complete"


@shared_services
def test_sigterm_lets_short_replies_finish_and_stores_the_rest_as_interrupted(alice, model):
    """A process stopped as systemd or docker stop it, while it streams two replies to API
    clients, one of them watched on a page of another process."""
    long_chat, short_chat = (Conversation.objects.create(owner=alice) for _ in range(2))
    _, key = ApiToken.issue(alice, "tests")
    session = session_key(alice)
    short_text = "".join(WORDS[:10])
    # The long reply would take ten seconds, the short one one.
    model.script(Reply(chunks=WORDS, delay=0.08), Reply(chunks=WORDS[:10], delay=0.1))
    env = server_env(model, CHAT_SHUTDOWN_GRACE_SECONDS="3")
    with Daphne("stopping", **env) as stopping, Daphne("staying", **env) as staying:
        long_stream, long_reply = api_reply(stopping, key, long_chat, "Tell me a long story")
        short_stream, short_reply = api_reply(stopping, key, short_chat, "Say something short")
        wait_for(lambda: flushed_some_text(short_reply), what="the short reply's first words")

        async def stop_while_a_page_watches() -> tuple[ReplyWatcher, int]:
            watcher = ReplyWatcher()
            page = ChatClient(staying, session).websocket(long_chat.pk, str(long_reply.pk))
            async with page as socket:
                exit_status = await asyncio.to_thread(stopping.terminate)
                await watch_until_finished(socket, watcher, str(long_reply.pk))
            return watcher, exit_status

        watcher, exit_status = asyncio.run(stop_while_a_page_watches())
        # The conversation takes the next message at once, through the process that stays.
        model.default = Reply(text="Still here.")
        response = ChatClient(staying, session).post(f"/c/{long_chat.pk}/messages/", {"text": "?"})
        assert response.status_code == 200

    assert exit_status == 0
    long_reply.refresh_from_db()
    short_reply.refresh_from_db()
    assert (short_reply.status, short_reply.content) == (Message.Status.COMPLETE, short_text)
    assert long_reply.status == Message.Status.INTERRUPTED
    assert long_reply.content and FULL_TEXT.startswith(long_reply.content)
    assert long_reply.content != FULL_TEXT
    # Each API client was sent the whole reply as stored, then told how it ended.
    event, final = short_stream.final_event()
    assert event == "done"
    assert (final["status"], final["content"]) == ("complete", short_text)
    assert short_stream.text == short_text
    event, final = long_stream.final_event()
    assert event == "done"
    assert (final["status"], final["content"]) == ("interrupted", long_reply.content)
    assert long_stream.text == long_reply.content
    # The page on the other process shows it ended.
    assert watcher.status[str(long_reply.pk)] == "interrupted"
    assert watcher.text[str(long_reply.pk)] == long_reply.content


def test_sigterm_of_a_lone_process_stores_its_reply_and_the_restarted_one_takes_the_next(
    alice, model
):
    """A restart, as a process manager does it with one process: on any database."""
    conversation = Conversation.objects.create(owner=alice)
    _, key = ApiToken.issue(alice, "tests")
    env = server_env(model, CHAT_SHUTDOWN_GRACE_SECONDS="0.5")
    with Daphne("restarting", **env) as restarting:
        stream, reply = api_reply(restarting, key, conversation, "Tell me a long story")
        wait_for(lambda: flushed_some_text(reply), what="a first flush")
        assert restarting.terminate() == 0
    event, final = stream.final_event()
    reply.refresh_from_db()

    assert reply.status == Message.Status.INTERRUPTED
    assert reply.content and FULL_TEXT.startswith(reply.content) and reply.content != FULL_TEXT
    assert event == "done"
    assert (final["status"], final["content"]) == ("interrupted", reply.content)
    assert stream.text == reply.content

    model.default = Reply(text="Back again.")
    with Daphne("restarted", **env) as restarted:
        turn = send_once_accepted(restarted, key, conversation, "Go on", patient=False)
    assert (turn["reply"]["status"], turn["reply"]["content"]) == ("complete", "Back again.")


def test_a_second_sigterm_stores_the_replies_at_once_without_waiting_out_the_grace(alice, model):
    conversation = Conversation.objects.create(owner=alice)
    _, key = ApiToken.issue(alice, "tests")
    env = server_env(model, CHAT_SHUTDOWN_GRACE_SECONDS="600")
    with Daphne("impatient", **env) as impatient:
        stream, reply = api_reply(impatient, key, conversation, "Tell me a long story")
        impatient.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Shutting down" in impatient.log.read_text(), what="the grace period")
        assert impatient.terminate(timeout=20) == 0
    event, final = stream.final_event()
    reply.refresh_from_db()

    assert reply.status == Message.Status.INTERRUPTED and reply.content != FULL_TEXT
    assert event == "done"
    assert (final["status"], final["content"]) == ("interrupted", reply.content)
