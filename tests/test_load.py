"""Load: 200 conversations streaming at once through the real consumer stack, nothing lost."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from accounts.models import User
from conversations.models import Conversation, Message
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.replies import wait_for_reply

pytestmark = [pytest.mark.live, pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

USERS = 40
CONVERSATIONS_EACH = 5
STREAMS = USERS * CONVERSATIONS_EACH
WORDS = [f"word{n} " for n in range(40)]


def signed_in_users() -> list[tuple[Client, list[Conversation]]]:
    people = []
    for n in range(USERS):
        user = User.objects.create_user(f"load{n}@example.com")  # no password: no hashing
        client = Client()
        client.force_login(user)
        conversations = Conversation.objects.bulk_create(
            [Conversation(owner=user, title=f"Load {n}.{k}") for k in range(CONVERSATIONS_EACH)]
        )
        people.append((client, conversations))
    return people


async def test_200_concurrent_streams_are_all_stored_exactly_as_received(
    settings, fake_openai: FakeOpenAI, open_socket
):
    # The production cadences: the suite's fast flushes would be 10,000 writes a second here.
    settings.CHAT_FLUSH_SECONDS = 1.0
    settings.CHAT_DELTA_BATCH_SECONDS = 0.03
    # The suite's 5 s limit catches a silent model quickly; here 200 streams share two busy
    # cores with the fake model, and a late token is not what this test is about.
    settings.OPENAI_TIMEOUT = settings.OPENAI_CONNECT_TIMEOUT = 60.0
    # Each user streams in all their conversations at once.
    settings.CHAT_MAX_REPLIES_PER_USER = CONVERSATIONS_EACH
    fake_openai.default = Reply(chunks=WORDS, delay=0.01)
    people = await sync_to_async(signed_in_users)()
    streams = []  # (client, conversation, socket)
    for client, conversations in people:
        for conversation in conversations:
            socket = await open_socket(conversation, client=client)
            assert socket.connected
            streams.append((client, conversation, socket))

    browsers = {}
    for client, _ in people:
        browsers[id(client)] = AsyncClient()
        browsers[id(client)].cookies = client.cookies
    responses = await asyncio.gather(
        *(
            browsers[id(client)].post(f"/c/{conversation.pk}/messages/", {"text": f"Q {n}"})
            for n, (client, conversation, _) in enumerate(streams)
        )
    )
    assert {response.status_code for response in responses} == {302}
    replies = {
        reply.conversation_id: reply
        async for reply in Message.objects.filter(role=Message.Role.ASSISTANT)
    }
    assert len(replies) == STREAMS
    finals = await asyncio.gather(
        *(
            socket.receive_until_done(replies[conversation.pk], timeout=60)
            for _, conversation, socket in streams
        )
    )
    await asyncio.gather(*(wait_for_reply(reply.pk) for reply in replies.values()))

    expected = "".join(WORDS)
    for (_, conversation, socket), final in zip(streams, finals, strict=True):
        reply = await Message.objects.aget(pk=replies[conversation.pk].pk)
        assert reply.status == Message.Status.COMPLETE
        assert reply.content == expected
        # What the page streamed is the reply's beginning, never a hole or a repeat (a page
        # that fell behind may be handed the rest whole), and it ends showing the whole reply.
        assert expected.startswith(socket.text_of(reply))
        assert f"<p>{expected.strip()}</p>" in final
    questions = Message.objects.filter(role=Message.Role.USER).values_list("content", flat=True)
    assert sorted([q async for q in questions]) == sorted(f"Q {n}" for n in range(STREAMS))
    assert len(fake_openai.requests) == STREAMS
