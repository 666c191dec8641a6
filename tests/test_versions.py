"""Regenerating the last reply and editing the last message keep earlier versions."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Conversation, Message
from conversations.replies import stop
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.replies import wait_for_reply

pytestmark = pytest.mark.django_db(transaction=True)


def current_history(conversation: Conversation) -> list[tuple[str, str, str]]:
    return [
        (m.role, m.content, m.status)
        for m in conversation.messages.filter(superseded_by__isnull=True).order_by("created_at")
    ]


async def latest_reply(conversation: Conversation) -> Message:
    return await (
        Message.objects.filter(
            conversation=conversation, role="assistant", superseded_by__isnull=True
        )
        .order_by("-created_at")
        .afirst()
    )


@pytest.mark.asyncio
async def test_regenerate_replaces_the_last_reply_and_keeps_the_old_one(
    conversation, alice_async_client, fake_openai: FakeOpenAI, open_socket
):
    fake_openai.script(Reply(text="Try **Porto** instead."))
    socket = await open_socket(conversation)
    old_reply = await latest_reply(conversation)

    response = await alice_async_client.post(
        f"/c/{conversation.pk}/regenerate/", headers={"HX-Request": "true"}
    )

    assert response.status_code == 204
    new_reply = await latest_reply(conversation)
    assert new_reply.pk != old_reply.pk
    await socket.receive_until_done(new_reply)
    await wait_for_reply(new_reply.pk)
    await new_reply.arefresh_from_db()
    await old_reply.arefresh_from_db()
    assert new_reply.content == "Try **Porto** instead."
    assert old_reply.superseded_by_id == new_reply.pk
    assert old_reply.content == "Try **Lisbon**."
    # The model was asked the same question again, without the answer being replaced.
    sent = fake_openai.requests[-1]["messages"]
    assert sent == [{"role": "user", "content": "Where should I go in May?"}]


@pytest.mark.asyncio
async def test_the_page_shows_earlier_versions_on_demand(
    conversation, alice_async_client, fake_openai: FakeOpenAI
):
    fake_openai.script(Reply(text="Second answer"), Reply(text="Third answer"))
    for _ in range(2):
        await alice_async_client.post(f"/c/{conversation.pk}/regenerate/")
        await wait_for_reply((await latest_reply(conversation)).pk)

    page = (await alice_async_client.get(conversation.get_absolute_url())).content.decode()

    assert "Third answer" in page
    assert "2 earlier versions" in page
    assert "Lisbon" in page and "Second answer" in page
    assert page.index("Third answer") < page.index("2 earlier versions")


@pytest.mark.asyncio
async def test_editing_the_last_message_sends_the_new_text_and_keeps_the_old_turn(
    conversation, alice_async_client, fake_openai: FakeOpenAI
):
    fake_openai.script(Reply(text="June is lovely in Norway."))
    question = await conversation.messages.aget(role="user")

    response = await alice_async_client.post(
        f"/c/{conversation.pk}/messages/{question.pk}/edit/",
        {"text": "Where should I go in June?"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 204
    reply = await latest_reply(conversation)
    await wait_for_reply(reply.pk)
    history = await Message.objects.filter(conversation=conversation).acount()
    assert history == 4
    assert fake_openai.requests[-1]["messages"] == [
        {"role": "user", "content": "Where should I go in June?"}
    ]
    assert await sync_to_async(current_history)(conversation) == [
        ("user", "Where should I go in June?", "complete"),
        ("assistant", "June is lovely in Norway.", "complete"),
    ]
    await question.arefresh_from_db()
    assert question.superseded_by_id is not None


@pytest.mark.asyncio
async def test_only_the_last_message_can_be_edited(make_conversation, alice_async_client):
    conversation = await sync_to_async(make_conversation)(
        history=[("user", "One"), ("assistant", "1"), ("user", "Two"), ("assistant", "2")],
    )
    first = await conversation.messages.filter(role="user").order_by("created_at").afirst()

    response = await alice_async_client.post(
        f"/c/{conversation.pk}/messages/{first.pk}/edit/", {"text": "Changed"}
    )

    assert response.status_code == 200
    assert "Only your last message can be edited." in response.content.decode()
    assert await conversation.messages.acount() == 4


@pytest.mark.asyncio
async def test_regenerate_is_refused_while_a_reply_streams(
    conversation, alice_async_client, fake_openai: FakeOpenAI
):
    fake_openai.script(Reply(text="slow " * 40, delay=0.05))
    await alice_async_client.post(f"/c/{conversation.pk}/messages/", {"text": "More?"})
    streaming = await latest_reply(conversation)

    response = await alice_async_client.post(
        f"/c/{conversation.pk}/regenerate/", headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert "Wait for the current reply to finish" in response.content.decode()
    assert await latest_reply(conversation) == streaming
    await stop.request_stop(streaming.pk)
    await wait_for_reply(streaming.pk)


def test_other_users_cannot_regenerate_or_edit(conversation, bob_client: Client):
    question = conversation.messages.get(role="user")
    edit_url = f"/c/{conversation.pk}/messages/{question.pk}/edit/"

    regenerate = bob_client.post(f"/c/{conversation.pk}/regenerate/")
    edit_form = bob_client.get(edit_url)
    edit = bob_client.post(edit_url, {"text": "mine now"})

    assert (regenerate.status_code, edit_form.status_code, edit.status_code) == (404, 404, 404)
    assert conversation.messages.count() == 2
