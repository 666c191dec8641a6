"""The websocket a chat page watches its conversation through, against a model over real HTTP."""

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.urls import reverse

from conversations.llm.wire import estimate_prompt_tokens, usage_dict
from conversations.models import Conversation, Message
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply

HTMX = {"HX-Request": "true"}

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def send(client, conversation: Conversation, text: str) -> Message:
    """Send a message as the page does and return the reply it started."""
    response = await client.post(
        reverse("message_send", args=[conversation.pk]), {"text": text}, headers=HTMX
    )
    assert response.status_code == 200
    return await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")


async def flushed_text(reply: Message) -> str:
    """Wait until the generator has stored some of the reply's text, and return it."""
    async with asyncio.timeout(5):
        while True:
            await reply.arefresh_from_db()
            if reply.content:
                return reply.content
            await asyncio.sleep(0.01)


async def json_answer(socket) -> dict:
    """The next frame that is JSON rather than HTML."""
    while not (frame := await socket.receive()).startswith("{"):
        pass
    return json.loads(frame)


class TestWhoMayWatch:
    async def test_the_owner_may_watch(self, open_socket, conversation):
        socket = await open_socket(conversation)

        assert socket.connected

    async def test_an_anonymous_visitor_is_refused(self, open_socket, conversation):
        socket = await open_socket(conversation, client=None)

        assert not socket.connected

    async def test_another_user_is_refused(self, open_socket, conversation, bob_client):
        socket = await open_socket(conversation, client=bob_client)

        assert not socket.connected

    async def test_an_unknown_conversation_is_refused(self, open_socket, alice):
        socket = await open_socket(Conversation(pk=uuid.uuid4(), owner=alice))

        assert not socket.connected

    async def test_a_page_from_another_site_is_refused(self, open_socket, conversation):
        socket = await open_socket(conversation, origin="https://evil.example")

        assert not socket.connected


@pytest.mark.parametrize(
    ("conversation_prompt", "site_prompt", "expected_system_message"),
    [
        pytest.param("Answer as a pirate.", "Be brief.", "Answer as a pirate.", id="own-prompt"),
        pytest.param("", "Be brief.", "Be brief.", id="site-prompt"),
        pytest.param("", "", None, id="no-prompt"),
    ],
)
async def test_a_reply_streams_to_the_page_and_is_stored_whole(
    open_socket,
    alice_async_client,
    make_conversation,
    fake_openai,
    settings,
    conversation_prompt,
    site_prompt,
    expected_system_message,
):
    settings.CHAT_SYSTEM_PROMPT = site_prompt
    history = [
        ("user", "Where should I go in May?"),
        ("assistant", "Try **Lisbon**."),
        ("user", "What about food?"),
        ("assistant", "Pastéis de nata & grilled sardines."),
    ]
    metadata = {"model": "gpt-4o-mini"}
    if conversation_prompt:
        metadata["system_prompt"] = conversation_prompt
    conversation = await sync_to_async(make_conversation)(metadata=metadata, history=history)
    chunks = ["**Porto**", " is", " two hours", " north", " by train", " & <cheap>", "."]
    fake_openai.script(Reply(chunks=chunks, delay=0.03, model="gpt-4o-mini-2024-07-18"))
    socket = await open_socket(conversation)

    reply = await send(alice_async_client, conversation, "And in June?")
    finished = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    await reply.arefresh_from_db()
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "".join(chunks)
    assert socket.text_of(reply) == reply.content
    assert socket.delta_count(reply) > 1
    assert "<strong>Porto</strong> is two hours north by train &amp; &lt;cheap&gt;." in finished
    assert any("And in June?" in frame for frame in socket.frames[: socket.frames.index(finished)])

    [request] = fake_openai.requests
    system = [{"role": "system", "content": expected_system_message}]
    assert request["messages"] == [
        *(system if expected_system_message else []),
        *({"role": role, "content": content} for role, content in history),
        {"role": "user", "content": "And in June?"},
    ]
    assert request["model"] == "gpt-4o-mini"
    assert request["stream"] is True
    assert reply.metadata["model"] == "gpt-4o-mini-2024-07-18"
    assert reply.metadata["finish_reason"] == "stop"
    assert reply.usage == usage_dict(estimate_prompt_tokens(request["messages"]), len(chunks))


async def test_partial_text_reaches_the_page_before_the_reply_is_finished(
    open_socket, alice_async_client, conversation, fake_openai
):
    words = [f" word{n}" for n in range(20)]
    fake_openai.script(Reply(chunks=words, delay=0.03))
    socket = await open_socket(conversation)

    reply = await send(alice_async_client, conversation, "Count slowly")
    early_text = await socket.receive_until_text(reply)
    await reply.arefresh_from_db()
    still_streaming = reply.status
    await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    await reply.arefresh_from_db()
    assert still_streaming == Message.Status.STREAMING
    assert reply.content.startswith(early_text)
    assert len(early_text) < len(reply.content)
    assert socket.text_of(reply) == reply.content


@pytest.mark.live
async def test_a_page_opened_mid_reply_gets_the_text_so_far_then_the_rest(
    open_socket, alice_async_client, conversation, fake_openai
):
    words = [f" word{n}" for n in range(60)]
    fake_openai.script(Reply(chunks=words, delay=0.02))
    first_page = await open_socket(conversation)
    reply = await send(alice_async_client, conversation, "Count slowly")
    stored_so_far = await flushed_text(reply)

    second_page = await open_socket(conversation)
    await second_page.receive_until_text(reply)
    resent_prefix = second_page.text_of(reply)
    await first_page.receive_until_done(reply)
    await second_page.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    await reply.arefresh_from_db()
    assert reply.content == "".join(words)
    assert resent_prefix.startswith(stored_so_far)
    assert len(resent_prefix) < len(reply.content)
    assert second_page.text_of(reply) == reply.content
    assert first_page.text_of(reply) == reply.content


async def test_a_page_opened_after_the_reply_finished_gets_it_whole(
    open_socket, alice_async_client, conversation, fake_openai
):
    fake_openai.script(Reply(text="Lisbon, then **Porto**."))
    reply = await send(alice_async_client, conversation, "Plan it")
    await wait_for_reply(reply.pk)

    socket = await open_socket(conversation)
    frame = await socket.receive_until_done(reply)

    assert socket.frames == [frame]
    assert "Lisbon, then <strong>Porto</strong>." in frame


async def test_stop_keeps_the_text_so_far_and_marks_the_reply_stopped(
    open_socket, alice_async_client, conversation, fake_openai
):
    words = [f" word{n}" for n in range(10)]
    fake_openai.script(Reply(chunks=words, stall_after=3))
    socket = await open_socket(conversation)
    reply = await send(alice_async_client, conversation, "Count to ten")
    while socket.text_of(reply) != "".join(words[:3]):
        await socket.receive()

    response = await alice_async_client.post(
        reverse("reply_stop", args=[conversation.pk]), headers=HTMX
    )
    finished = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    assert response.status_code == 204
    await reply.arefresh_from_db()
    assert reply.status == Message.Status.STOPPED
    assert reply.content == "".join(words[:3])
    assert socket.text_of(reply) == reply.content
    assert "Stopped" in finished
    assert await conversation.messages.filter(content="Count to ten").aexists()


async def test_a_failing_provider_shows_its_error_and_keeps_the_partial_reply(
    open_socket, alice_async_client, conversation, fake_openai
):
    fake_openai.script(Reply(chunks=["Lisbon", " is", " lovely", " in"], drop_after=2))
    socket = await open_socket(conversation)

    reply = await send(alice_async_client, conversation, "Tell me about Lisbon")
    finished = await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)

    await reply.arefresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.content == "Lisbon is"
    # The final rendering shows what arrived, however much of it had streamed to the page.
    assert "Lisbon is" in finished
    assert socket.text_of(reply) in {"", "Lisbon", "Lisbon is"}
    assert "status-error" in finished
    assert reply.error_text in finished


async def test_a_frame_from_the_page_is_answered_with_an_error_and_the_socket_stays_open(
    open_socket, alice_async_client, conversation, fake_openai
):
    fake_openai.script(Reply(delay=0.01))  # paced: the page follows it as it streams
    socket = await open_socket(conversation)

    await socket.communicator.send_to(text_data=json.dumps({"text": "Send this for me"}))
    answer = await json_answer(socket)

    assert "only streams" in answer["error"]
    assert not await conversation.messages.filter(content="Send this for me").aexists()
    reply = await send(alice_async_client, conversation, "Sent the proper way")
    await socket.receive_until_done(reply)
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()
    assert socket.text_of(reply) == reply.content == fake_openai.default.text


async def test_a_channel_layer_failing_at_the_end_still_leaves_the_reply_stored(
    alice_async_client, conversation, fake_openai, monkeypatch
):
    layer = get_channel_layer()

    async def broken_group_discard(group, channel):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(layer, "group_discard", broken_group_discard)
    fake_openai.script(Reply(text="Stored whatever the layer does."))

    reply = await send(alice_async_client, conversation, "Say something")
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()

    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Stored whatever the layer does."
