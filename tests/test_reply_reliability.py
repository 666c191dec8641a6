"""How a reply ends when its process falters: paused, short of database connections, stopped.

- A reply's text is written only by the generator that holds the reply's lease: one whose reply
  was marked interrupted meanwhile (another process took it for dead: its process was paused)
  stops at once and writes nothing more.
- A generator whose writes fail keeps its text and stores it whole once the database can.
- A process that shuts down (running.shut_down, which chatsite/serve.py calls on SIGTERM or
  SIGINT) takes no new reply, gives those running a grace period, then stores the rest as
  interrupted with all their text and tells their watchers.

Real daphne processes paused with SIGSTOP and stopped with SIGTERM are in tests/test_scaleout.py.
"""

import asyncio
import json

import pytest
from django.db import OperationalError, connection, transaction
from django.test import AsyncClient
from django.urls import reverse
from psycopg_pool import PoolTimeout

from accounts.models import ApiToken
from conversations.db import unit_of_work
from conversations.models import Conversation, Message
from conversations.replies import running, sweeper, writer
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import Daphne, api_reply, flushed_some_text, server_env, wait_for
from tests.support.replies import wait_for_reply

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = [f"w{n} " for n in range(40)]
FULL_TEXT = "".join(WORDS)

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a pool of connections is PostgreSQL's"
)


@pytest.fixture
def token_of_alice(alice) -> str:
    return ApiToken.issue(alice, "tests")[1]


@pytest.fixture
def shutting_down():
    """The test shuts the process down; the next test gets a process that takes replies."""
    yield
    running._shutting_down = False


async def send_through_api(key: str, conversation: Conversation, text: str = "Count"):
    return await AsyncClient().post(
        reverse("api_messages", args=[conversation.pk]),
        {"content": text},
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


def sse_events(chunks: list[bytes]) -> list[tuple[str, dict]]:
    events = []
    for block in b"".join(chunks).decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def read_until(body, text: str, received: list[bytes]) -> None:
    while text not in b"".join(received).decode():
        received.append(await anext(body))


def sent_text(events: list[tuple[str, dict]]) -> str:
    return "".join(data["text"] for event, data in events if event == "delta")


def no_connection_to_give() -> OperationalError:
    """What Django raises when the pool has no connection to give within its timeout."""
    error = OperationalError("couldn't get a connection after 10.00 sec")
    error.__cause__ = PoolTimeout("couldn't get a connection after 10.00 sec")
    return error


async def until(condition) -> None:
    async with asyncio.timeout(10):
        while not await condition():
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- #
# Writing a reply
# --------------------------------------------------------------------------- #


@pytest.mark.asyncio
async def test_a_generator_whose_reply_was_taken_for_dead_stops_and_writes_nothing_more(
    settings, fake_openai, alice, token_of_alice
):
    settings.CHAT_FLUSH_SECONDS = 0.5  # text streams on well past what was last written
    fake_openai.default = Reply(chunks=WORDS, delay=0.1)
    conversation = await Conversation.objects.acreate(owner=alice)
    response = await send_through_api(token_of_alice, conversation)
    body = aiter(response.streaming_content)
    received = [await anext(body)]
    reply = await conversation.messages.aget(role=Message.Role.ASSISTANT)

    async def written() -> bool:
        await reply.arefresh_from_db()
        return bool(reply.content)

    await until(written)
    # Another process takes it for dead, as its sweeper does: interrupted, the lease taken.
    await Message.objects.filter(pk=reply.pk).aupdate(status=Message.Status.INTERRUPTED, lease=None)
    await reply.arefresh_from_db()
    stored = reply.content
    received += [chunk async for chunk in body]
    events = sse_events(received)
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()

    assert (reply.status, reply.content) == (Message.Status.INTERRUPTED, stored)
    # The client was sent more than is stored: it is told so, with the reply as stored.
    assert sent_text(events).startswith(stored) and len(sent_text(events)) > len(stored)
    event, final = events[-1]
    assert (event, final["code"]) == ("error", "interrupted")
    assert (final["reply"]["status"], final["reply"]["content"]) == ("interrupted", stored)
    # It stopped asking the model, long before the model's reply would have ended.
    assert len(sent_text(events)) < len(FULL_TEXT)

    async def upstream_closed() -> bool:
        return fake_openai.disconnects_mid_response == 1

    await until(upstream_closed)


class PausedWriter:
    """This process as it comes back from a pause: its writer has not written yet (its next
    write waits until `resume()`), and its generations' last writes are as old as the pause."""

    def __init__(self, monkeypatch) -> None:
        self.resumed = asyncio.Event()
        self.waiting = asyncio.Event()
        write = writer._flush

        async def write_once_resumed(texts):
            self.waiting.set()
            await self.resumed.wait()
            return await write(texts)

        monkeypatch.setattr(writer, "_flush", write_once_resumed)

    async def pause(self, paused: running.Generation, seconds: float) -> None:
        await self.waiting.wait()  # a write begun before stands; the next one waits
        # Monotonic time runs on while a process is stopped: its last write looks that old.
        paused.last_write -= seconds

    def resume(self) -> None:
        self.resumed.set()


async def paused_while_streaming(alice, key: str, monkeypatch, seconds: float):
    """A reply streaming to an API client that has its first word, its process paused for
    `seconds`: its writer, the stream, what it read, the reply and its generation."""
    writer = PausedWriter(monkeypatch)
    conversation = await Conversation.objects.acreate(owner=alice)
    response = await send_through_api(key, conversation)
    body = aiter(response.streaming_content)
    received = [await anext(body)]
    reply = await conversation.messages.aget(role=Message.Role.ASSISTANT)
    await read_until(body, WORDS[0], received)
    paused = running.generations[reply.pk][0]
    await writer.pause(paused, seconds)
    return writer, body, received, reply, paused


async def until_the_model_sent_more(paused: running.Generation, than: int) -> None:
    async def sent_more() -> bool:
        return paused.length > than + 10

    await until(sent_more)


def final_reply(event: str, data: dict) -> dict:
    """The reply as the last event of an API stream gives it."""
    return data["reply"] if event == "error" else data


@pytest.mark.asyncio
async def test_a_generator_back_from_a_pause_relays_nothing_more_once_its_reply_was_taken(
    settings, fake_openai, alice, token_of_alice, monkeypatch
):
    fake_openai.default = Reply(chunks=WORDS, delay=0.02)
    writer, body, received, reply, paused = await paused_while_streaming(
        alice, token_of_alice, monkeypatch, settings.CHAT_STALE_SECONDS
    )
    # Meanwhile another process took it for dead, as its sweeper does.
    await Message.objects.filter(pk=reply.pk).aupdate(status=Message.Status.INTERRUPTED, lease=None)
    relayed_when_taken = paused.handed_out
    await until_the_model_sent_more(paused, than=relayed_when_taken)
    writer.resume()
    received += [chunk async for chunk in body]
    events = sse_events(received)
    await reply.arefresh_from_db()

    # Text the model sent after the pause is never relayed: the reply was no longer its own.
    assert len(sent_text(events)) == relayed_when_taken
    assert FULL_TEXT.startswith(sent_text(events))
    assert reply.status == Message.Status.INTERRUPTED
    stored = final_reply(*events[-1])
    assert (stored["status"], stored["content"]) == ("interrupted", reply.content)


@pytest.mark.asyncio
async def test_a_generator_back_from_a_pause_that_still_holds_its_reply_relays_all_of_it(
    settings, fake_openai, alice, token_of_alice, monkeypatch
):
    fake_openai.default = Reply(chunks=WORDS, delay=0.02)
    writer, body, received, _, paused = await paused_while_streaming(
        alice, token_of_alice, monkeypatch, settings.CHAT_STALE_SECONDS
    )
    held_from = paused.published
    await until_the_model_sent_more(paused, than=held_from)
    # Until a write confirms it still holds the reply, it keeps what arrives to itself.
    assert paused.published == held_from
    writer.resume()
    received += [chunk async for chunk in body]
    events = sse_events(received)

    # Confirmed: what it held back follows, in order, and the reply ends whole.
    assert sent_text(events) == FULL_TEXT
    assert events[-1][0] == "done"
    assert (events[-1][1]["status"], events[-1][1]["content"]) == ("complete", FULL_TEXT)


@pytest.mark.asyncio
async def test_a_reply_keeps_all_its_text_while_the_database_has_no_connection_to_give(
    settings, fake_openai, alice, token_of_alice, monkeypatch
):
    settings.CHAT_STALE_SECONDS = 0.1  # the outage is longer than a heartbeat may miss
    fake_openai.default = Reply(chunks=WORDS, delay=0.005)
    store_final = writer._finish
    outage = {"final stores refused": 0}
    taken_for_dead = []

    async def flush_refused(*args):
        raise no_connection_to_give()

    async def final_store_once_the_pool_frees(*args):
        if outage["final stores refused"] < 3:
            outage["final stores refused"] += 1
            # Meanwhile the process looks for dead replies, as its sweeper does.
            taken_for_dead.extend(await unit_of_work(sweeper.mark_stale_replies_interrupted)())
            raise no_connection_to_give()
        return await store_final(*args)

    monkeypatch.setattr(writer, "_flush", flush_refused)
    monkeypatch.setattr(writer, "_finish", final_store_once_the_pool_frees)
    conversation = await Conversation.objects.acreate(owner=alice)
    response = await send_through_api(token_of_alice, conversation)
    events = sse_events([chunk async for chunk in response.streaming_content])
    reply = await conversation.messages.aget(role=Message.Role.ASSISTANT)

    assert outage["final stores refused"] == 3
    assert taken_for_dead == []
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, FULL_TEXT)
    assert events[-1][0] == "done"
    assert (events[-1][1]["status"], events[-1][1]["content"]) == ("complete", FULL_TEXT)


@pytest.mark.live
@on_postgresql
def test_a_reply_ending_while_the_pool_is_exhausted_is_stored_whole_once_it_frees(alice):
    """A real daphne whose one pooled connection is held by a write waiting on a lock: the
    reply's final store finds no connection within the pool's timeout, and is made later."""
    conversation = Conversation.objects.create(owner=alice)
    _, key = ApiToken.issue(alice, "tests")
    with FakeOpenAI(api_key="sk-pool-tests") as model:
        model.default = Reply(chunks=WORDS, delay=0.02)
        env = server_env(model, DATABASE_POOL_MIN="1", DATABASE_POOL_MAX="1")
        with Daphne("pool-of-one", **env) as server:
            stream, reply = api_reply(server, key, conversation, "Count")
            wait_for(lambda: flushed_some_text(reply), what="a first write")
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {Message._meta.db_table} IN EXCLUSIVE MODE")
                wait_for(
                    lambda: "Storing reply" in server.log.read_text(),
                    timeout=30,
                    what="a final store refused for want of a connection",
                )
            event, final = stream.final_event()

    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.COMPLETE, FULL_TEXT)
    assert event == "done"
    assert (final["status"], final["content"]) == ("complete", FULL_TEXT)
    assert stream.text == FULL_TEXT


# --------------------------------------------------------------------------- #
# Shutting down
# --------------------------------------------------------------------------- #


@pytest.mark.live
@pytest.mark.asyncio
async def test_replies_get_the_grace_period_to_finish_then_are_stored_interrupted_with_their_text(
    fake_openai, alice, token_of_alice, shutting_down
):
    short_chat, stalled_chat = [await Conversation.objects.acreate(owner=alice) for _ in range(2)]
    fake_openai.script(
        Reply(chunks=WORDS, delay=0.02),
        Reply(chunks=WORDS, stall_after=5, stall_seconds=60),
    )
    short = await send_through_api(token_of_alice, short_chat)
    stalled = await send_through_api(token_of_alice, stalled_chat)
    short_body, stalled_body = aiter(short.streaming_content), aiter(stalled.streaming_content)
    received: list[bytes] = []
    await read_until(stalled_body, "w4 ", received)

    shutdown = asyncio.create_task(running.shut_down(grace=2))
    short_events = sse_events([chunk async for chunk in short_body])
    received += [chunk async for chunk in stalled_body]
    await shutdown
    stalled_events = sse_events(received)

    short_reply = await short_chat.messages.aget(role=Message.Role.ASSISTANT)
    stalled_reply = await stalled_chat.messages.aget(role=Message.Role.ASSISTANT)
    assert (short_reply.status, short_reply.content) == (Message.Status.COMPLETE, FULL_TEXT)
    assert short_events[-1][0] == "done"
    assert short_events[-1][1]["status"] == "complete"
    # All the text that arrived is stored, and the API client is told how the reply ended.
    assert stalled_reply.status == Message.Status.INTERRUPTED
    assert stalled_reply.content == "".join(WORDS[:5])
    assert stalled_events[-1][0] == "done"
    assert stalled_events[-1][1]["status"] == "interrupted"
    assert stalled_events[-1][1]["content"] == "".join(WORDS[:5])
    assert running.replies_in_progress() == 0


@pytest.mark.asyncio
async def test_a_process_shutting_down_refuses_a_new_message_at_once_and_stores_nothing(
    alice, alice_async_client, token_of_alice, conversation, shutting_down
):
    await running.shut_down(grace=0)

    by_api = await send_through_api(token_of_alice, conversation, "Hello?")
    by_page = await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]),
        {"text": "Hello?"},
        headers={"HX-Request": "true"},
    )

    assert by_api.status_code == 503 and int(by_api["Retry-After"]) > 0
    assert by_api.json()["error"]["code"] == "busy"
    assert "restarting" in by_api.json()["error"]["message"]
    assert by_page.status_code == 503 and int(by_page["Retry-After"]) > 0
    assert "The server is restarting" in by_page.content.decode()
    assert by_page["HX-Reswap"] == "none"  # the composer keeps the text typed
    assert not await Message.objects.filter(content="Hello?").aexists()
    assert await conversation.messages.acount() == 2  # the question and answer it had
