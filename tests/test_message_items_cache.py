"""A chat page serves finished messages from a cache of their rendered items, and never a stale
one: whatever changes a message (an edit, a regeneration, a finished reply, a deletion, a write
that leaves updated_at alone) shows on the next page."""

import re

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from conversations.models import Conversation, Message
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.replies import wait_for_reply

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE_LIST = re.compile(r'<ol id="message-list".*?</ol>', re.S)


def message_list(client: Client, conversation: Conversation) -> str:
    response = client.get(conversation.get_absolute_url())
    assert response.status_code == 200
    return MESSAGE_LIST.search(response.content.decode())[0]


def latest_reply(conversation: Conversation) -> Message:
    return conversation.messages.filter(role="assistant", superseded_by__isnull=True).latest(
        "created_at"
    )


def test_a_page_from_the_cache_is_the_page_rendered_afresh(make_conversation, alice_client: Client):
    conversation = make_conversation(
        history=[
            ("user", "How do I print?"),
            ("assistant", "Use `print`:\n\n```python\nprint('hi')\n```"),
        ],
    )
    reply = latest_reply(conversation)
    reply.metadata = {"model": "gpt-test", "usage": {"total_tokens": 12}, "left_out": 2}
    reply.save(update_fields=["metadata"])
    cache.clear()

    afresh = message_list(alice_client, conversation)
    cached = message_list(alice_client, conversation)

    assert cached == afresh
    assert 'class="copy-button copy-message"' in cached
    assert f'hx-get="/c/{conversation.pk}/messages/' in cached  # the question's Edit
    assert f'hx-post="/c/{conversation.pk}/regenerate/"' in cached
    assert "2 earlier messages were left out" in cached
    assert '<span class="code-language">python</span>' in cached


def test_a_finished_reply_replaces_its_streaming_self(conversation, alice_client: Client):
    reply = latest_reply(conversation)
    Message.objects.filter(pk=reply.pk).update(status="streaming", content="Try")
    assert "aria-busy" in message_list(alice_client, conversation)

    # As generation stores the end of a reply: text, status, metadata and updated_at at once.
    Message.objects.filter(pk=reply.pk).update(
        content="Try **Porto**.",
        status="complete",
        metadata={"model": "gpt-test", "finish_reason": "stop"},
        updated_at=timezone.now(),
    )
    finished = message_list(alice_client, conversation)

    assert "aria-busy" not in finished
    assert "<strong>Porto</strong>" in finished
    assert "Finish reason" in finished and "gpt-test" in finished


def test_a_write_that_leaves_updated_at_alone_still_shows(conversation, alice_client: Client):
    reply = latest_reply(conversation)
    assert "<strong>Lisbon</strong>" in message_list(alice_client, conversation)

    Message.objects.filter(pk=reply.pk).update(content="Try **Seville**.", status="stopped")
    shown = message_list(alice_client, conversation)

    assert "Lisbon" not in shown
    assert "<strong>Seville</strong>" in shown
    assert "Stopped: the reply was cut short" in shown


def test_a_deleted_message_leaves_the_page(conversation, alice_client: Client):
    reply = latest_reply(conversation)
    assert f'id="message-{reply.pk}"' in message_list(alice_client, conversation)

    reply.delete()

    assert f'id="message-{reply.pk}"' not in message_list(alice_client, conversation)


@pytest.mark.asyncio
async def test_regenerating_and_editing_show_the_new_text_and_the_old_as_versions(
    conversation, alice_client: Client, alice_async_client, fake_openai: FakeOpenAI
):
    fake_openai.script(Reply(text="Try **Porto**."), Reply(text="June is lovely in Norway."))
    page = sync_to_async(message_list)
    old_reply = await sync_to_async(latest_reply)(conversation)
    assert "earlier version" not in await page(alice_client, conversation)

    await alice_async_client.post(f"/c/{conversation.pk}/regenerate/")
    await wait_for_reply((await sync_to_async(latest_reply)(conversation)).pk)
    regenerated = await page(alice_client, conversation)

    assert f'id="message-{old_reply.pk}"' not in regenerated
    assert "<strong>Porto</strong>" in regenerated
    assert "1 earlier version" in regenerated and "<strong>Lisbon</strong>" in regenerated

    question = await conversation.messages.aget(role="user", superseded_by__isnull=True)
    await alice_async_client.post(
        f"/c/{conversation.pk}/messages/{question.pk}/edit/", {"text": "And in June?"}
    )
    await wait_for_reply((await sync_to_async(latest_reply)(conversation)).pk)
    edited = await page(alice_client, conversation)

    assert f'id="message-{question.pk}"' not in edited
    assert "And in June?" in edited and "June is lovely in Norway." in edited
    assert "Where should I go in May?" in edited  # now the question's earlier version
