"""One user may have CHAT_MAX_REPLIES_PER_USER replies being written at once, in all their
conversations together: one more is refused before anything is stored or sent to the model,
under the composer on the pages, with 429 and Retry-After from the API."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, User
from conversations.models import Conversation, Message
from conversations.replies import stop
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

HTMX = {"HX-Request": "true"}
CAP = 2
REFUSAL = f"You already have {CAP} replies being written"


@pytest.fixture
def cap(settings) -> int:
    settings.CHAT_MAX_REPLIES_PER_USER = CAP
    return CAP


@pytest.fixture
def slow_model(fake_openai):
    """Every reply stalls after its first word: it is still being written when the next
    message is sent."""
    fake_openai.default = Reply(text="A slow and thoughtful answer", stall_after=1)
    return fake_openai


async def replies_being_written(
    client: AsyncClient, make_conversation, count: int
) -> list[Message]:
    replies = []
    for n in range(count):
        conversation = await sync_to_async(make_conversation)(title=f"Busy {n}")
        await client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Take your time"}
        )
        replies.append(await conversation.messages.filter(role=Message.Role.ASSISTANT).aget())
    return replies


async def stop_all(replies: list[Message]) -> None:
    for reply in replies:
        await stop.request_stop(reply.pk)
    for reply in replies:
        await wait_for_reply(reply.pk)


async def test_a_page_refuses_one_reply_more_under_the_composer(
    alice_async_client: AsyncClient, make_conversation, conversation, slow_model, cap
):
    busy = await replies_being_written(alice_async_client, make_conversation, cap)
    before = [m async for m in conversation.messages.all()]

    response = await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "One more <b>now</b>"},
        headers=HTMX,
    )  # fmt: skip
    regenerated = await alice_async_client.post(
        reverse("reply_regenerate", args=[conversation.pk]), headers=HTMX
    )

    field = response.content.decode()
    assert response.status_code == 200
    assert REFUSAL in field and "Your message was not sent." in field
    assert "One more &lt;b&gt;now&lt;/b&gt;</textarea>" in field
    assert REFUSAL in regenerated.content.decode()
    assert [m async for m in conversation.messages.all()] == before
    assert len(slow_model.requests) == cap
    await stop_all(busy)


async def test_a_first_message_starts_no_conversation(
    alice, alice_async_client: AsyncClient, make_conversation, slow_model, cap
):
    busy = await replies_being_written(alice_async_client, make_conversation, cap)

    response = await alice_async_client.post(
        reverse("conversation_start"), {"text": "A new topic"}, headers=HTMX
    )

    assert REFUSAL in response.content.decode()
    assert await Conversation.objects.filter(owner=alice).acount() == cap
    await stop_all(busy)


async def test_the_api_answers_429_with_retry_after_and_stores_nothing(
    alice: User, alice_async_client: AsyncClient, make_conversation, conversation, slow_model,
    cap
):  # fmt: skip
    busy = await replies_being_written(alice_async_client, make_conversation, cap)
    key = (await sync_to_async(ApiToken.issue)(alice, "script"))[1]
    client = AsyncClient()
    bearer = {"Authorization": f"Bearer {key}"}
    conversations_before = await Conversation.objects.acount()

    sent = await client.post(
        reverse("api_messages", args=[conversation.pk]),
        json.dumps({"content": "One more"}),
        content_type="application/json",
        headers=bearer,
    )
    started = await client.post(
        reverse("api_conversations"),
        json.dumps({"title": "New", "content": "Hello"}),
        content_type="application/json",
        headers=bearer,
    )

    for response in (sent, started):
        assert response.status_code == 429
        assert response["Content-Type"] == "application/json"
        assert int(response["Retry-After"]) > 0
        refusal = response.json()["error"]
        assert refusal["code"] == "too_many_replies"
        assert REFUSAL in refusal["message"]
    assert not await conversation.messages.filter(content="One more").aexists()
    assert await Conversation.objects.acount() == conversations_before
    assert len(slow_model.requests) == cap
    await stop_all(busy)


async def test_a_reply_that_ends_frees_its_place(
    alice_async_client: AsyncClient, make_conversation, conversation, slow_model, cap
):
    busy = await replies_being_written(alice_async_client, make_conversation, cap)
    await stop_all(busy[:1])

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "Now?"}, headers=HTMX
    )

    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")
    assert reply.status == Message.Status.STREAMING
    await asyncio.to_thread(slow_model.wait_for_requests, cap + 1)
    await stop_all([*busy[1:], reply])


async def test_replies_of_a_dead_process_do_not_count(
    alice_async_client: AsyncClient, make_conversation, conversation, slow_model, cap
):
    long_ago = timezone.now() - timedelta(minutes=5)
    for n in range(cap):
        orphaned = await sync_to_async(make_conversation)(title=f"Orphaned {n}")
        await Message.objects.acreate(
            conversation=orphaned, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING,
            created_at=long_ago, updated_at=long_ago,
        )  # fmt: skip

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "Anyone?"}, headers=HTMX
    )

    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")
    assert reply.status == Message.Status.STREAMING
    await stop_all([reply])


async def test_other_users_replies_do_not_count(
    bob: User, alice_async_client: AsyncClient, make_conversation, conversation, slow_model,
    cap
):  # fmt: skip
    bob_client = AsyncClient()
    await sync_to_async(bob_client.force_login)(bob)
    bobs = [await sync_to_async(make_conversation)(owner=bob) for _ in range(cap)]
    for conversation_of_bob in bobs:
        await bob_client.post(
            reverse("message_send", args=[conversation_of_bob.pk]), {"text": "Mine"}
        )

    await alice_async_client.post(
        reverse("message_send", args=[conversation.pk]), {"text": "And mine"}, headers=HTMX
    )

    replies = [
        m async for m in Message.objects.filter(status=Message.Status.STREAMING).order_by("pk")
    ]
    assert len(replies) == cap + 1
    await stop_all(replies)
