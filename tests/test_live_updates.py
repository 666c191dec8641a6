"""What every open page of a user learns without reloading: new titles, conversations moving
to the top of the list, and replies orphaned by a dead process."""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.replies import running
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.replies import wait_for_reply
from tests.support.sockets import open_home_socket

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def finish_background_work(reply: Message) -> None:
    await wait_for_reply(reply.pk)
    await asyncio.gather(*running._background_tasks)


async def test_the_first_exchange_names_the_conversation_everywhere(
    settings, alice_client, alice_async_client, fake_openai: FakeOpenAI, open_socket
):
    settings.CHAT_AUTO_TITLE = True
    fake_openai.script(Reply(text="Go to Lisbon in May."), Reply(text='"Spring trip to Lisbon."'))
    home = await open_home_socket(alice_client)

    response = await alice_async_client.post("/c/new/", {"text": "Where should I go in May?"})

    assert response.status_code == 302
    conversation = await Conversation.objects.aget(owner__email="alice@example.com")
    reply = await conversation.messages.aget(role="assistant")
    await finish_background_work(reply)
    await conversation.arefresh_from_db()
    assert conversation.title == "Spring trip to Lisbon"
    assert conversation.metadata["title_source"] == "model"
    title_request = fake_openai.requests[-1]["messages"]
    assert title_request[0]["role"] == "system"
    assert "Where should I go in May?" in title_request[1]["content"]
    assert "Go to Lisbon in May." in title_request[1]["content"]
    # The other open page heard of the new conversation, then of its new title.
    frames = []
    while not any("Spring trip to Lisbon" in frame for frame in frames):
        frames.append(await home.receive_from(timeout=5))
    assert 'id="conversation-list"' in frames[-1]
    await home.disconnect()


async def test_a_name_given_meanwhile_is_not_overwritten(
    settings, make_conversation, alice_async_client, fake_openai: FakeOpenAI
):
    settings.CHAT_AUTO_TITLE = True
    conversation = await sync_to_async(make_conversation)(
        title="My own name", metadata={"title_source": "user"}
    )
    fake_openai.script(Reply(text="An answer."))

    await alice_async_client.post(f"/c/{conversation.pk}/messages/", {"text": "Hello"})
    reply = await conversation.messages.aget(role="assistant")
    await finish_background_work(reply)

    await conversation.arefresh_from_db()
    assert conversation.title == "My own name"
    assert len(fake_openai.requests) == 1


async def test_the_offline_model_is_not_asked_for_titles(settings, alice_async_client):
    settings.CHAT_AUTO_TITLE = True

    await alice_async_client.post("/c/new/", {"text": "A question about birds"})
    conversation = await Conversation.objects.aget(owner__email="alice@example.com")
    reply = await conversation.messages.aget(role="assistant")
    await finish_background_work(reply)

    await conversation.arefresh_from_db()
    assert conversation.title == "A question about birds"
    assert "title_source" not in conversation.metadata


async def test_a_new_message_moves_its_conversation_up_on_every_open_page(
    make_conversation, alice_client, alice_async_client
):
    older = await sync_to_async(make_conversation)(
        title="Older chat", updated_at=timezone.now() - timedelta(days=2)
    )
    await sync_to_async(make_conversation)(title="Newer chat")
    home = await open_home_socket(alice_client)

    await alice_async_client.post(f"/c/{older.pk}/messages/", {"text": "Back to this"})

    frame = await home.receive_from(timeout=5)
    assert frame.index("Older chat") < frame.index("Newer chat")
    reply = await older.messages.aget(role="assistant")
    await wait_for_reply(reply.pk)
    await home.disconnect()


async def test_a_reply_orphaned_by_a_dead_process_is_marked_interrupted_on_open_pages(
    settings, conversation, open_socket
):
    settings.CHAT_STALE_SECONDS = 3
    orphan = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status=Message.Status.STREAMING,
        content="Half a thou",
    )
    socket = await open_socket(conversation)
    # Its process died: no heartbeat for longer than CHAT_STALE_SECONDS.
    await Message.objects.filter(pk=orphan.pk).aupdate(
        updated_at=timezone.now() - timedelta(seconds=60)
    )

    frame = await socket.receive_until_done(orphan, timeout=10)

    assert "status-interrupted" in frame
    assert "Half a thou" in frame
    await orphan.arefresh_from_db()
    assert orphan.status == Message.Status.INTERRUPTED
    assert orphan.content == "Half a thou"
    # The page offers to try again.
    assert "Retry" in frame
