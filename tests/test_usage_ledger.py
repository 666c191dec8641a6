"""The usage ledger: every reply's cost, kept when its conversation goes, reserved when the
reply starts and settled when it ends, however it ends.

What a user can do to spend more than their quota (delete the chats that cost it, stop or
break replies the provider billed anyway, start a reply while another is being written) is
counted, and a reply whose process died is settled by the sweeper.
"""

import asyncio
import importlib
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps
from django.test import AsyncClient, Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from conversations import usage
from conversations.llm import context
from conversations.models import Conversation, Message, UsageEntry
from conversations.replies import quota, stop, sweeper
from tests.support.fake_openai import Reply
from tests.support.ledger import paid_reply
from tests.support.replies import wait_for_reply
from tests.support.usage import tokens_used_on

HTMX = {"HX-Request": "true"}
WORDS = [f" word{n}" for n in range(12)]


async def send(client: AsyncClient, conversation: Conversation, text: str) -> str:
    response = await client.post(
        reverse("message_send", args=[conversation.pk]), {"text": text}, headers=HTMX
    )
    return response.content.decode()


async def last_reply(conversation: Conversation) -> Message:
    return await conversation.messages.filter(role=Message.Role.ASSISTANT).alatest("created_at")


async def text_arrives(reply: Message, text: str) -> None:
    """Wait until the reply's stored text reads `text` (the writer flushes every 20 ms here)."""
    for _ in range(500):
        await reply.arefresh_from_db()
        if reply.content == text:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the reply still reads {reply.content!r}")


async def entry_of(reply: Message) -> UsageEntry:
    return await UsageEntry.objects.aget(reply_id=reply.pk)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestEveryReplyIsCounted:
    async def test_a_finished_reply_counts_what_the_provider_reported(
        self, alice: User, alice_async_client: AsyncClient, conversation, fake_openai
    ):
        fake_openai.script(Reply(text="Lisbon, then Porto."))

        await send(alice_async_client, conversation, "And after Lisbon?")
        reply = await last_reply(conversation)
        await wait_for_reply(reply.pk)

        await reply.arefresh_from_db()
        entry = await entry_of(reply)
        assert entry.state == UsageEntry.State.SETTLED
        assert entry.source == UsageEntry.Source.REPORTED
        assert entry.user_id == alice.pk
        assert entry.total_tokens == reply.usage["total_tokens"] > 0
        assert entry.prompt_tokens == reply.usage["prompt_tokens"]
        assert await sync_to_async(tokens_used_on)(alice.pk, usage.today()) == entry.total_tokens

    async def test_deleting_the_conversation_gives_none_of_its_tokens_back(
        self, alice: User, alice_async_client: AsyncClient, conversation, make_conversation,
        fake_openai, settings
    ):  # fmt: skip
        fake_openai.script(Reply(text="Lisbon, then Porto."))
        await send(alice_async_client, conversation, "And after Lisbon?")
        reply = await last_reply(conversation)
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        settings.CHAT_DAILY_TOKEN_QUOTA = reply.usage["total_tokens"]

        await alice_async_client.post(
            reverse("conversation_delete", args=[conversation.pk]), {"confirm": "yes"}
        )
        another = await sync_to_async(make_conversation)(title="A fresh start")
        refused = await send(alice_async_client, another, "Now that it is gone?")

        assert not await Conversation.objects.filter(pk=conversation.pk).aexists()
        spent = reply.usage["total_tokens"]
        assert f"{spent:,} of {spent:,} tokens used today" in refused
        assert not await another.messages.aexists()
        page = (await alice_async_client.get(reverse("usage"))).content.decode()
        assert f"<strong>{spent:,}</strong> tokens in 1 reply" in page
        entry = await entry_of(reply)
        assert (entry.conversation_id, entry.message_id) == (None, None)

    async def test_a_stopped_reply_counts_its_prompt_and_the_text_it_wrote(
        self, alice: User, alice_async_client: AsyncClient, conversation, fake_openai
    ):
        fake_openai.script(Reply(chunks=WORDS, stall_after=3))
        await send(alice_async_client, conversation, "Count slowly")
        reply = await last_reply(conversation)
        arrived = "".join(WORDS[:3])
        await text_arrives(reply, arrived)
        reserved = await entry_of(reply)

        await alice_async_client.post(reverse("reply_stop", args=[conversation.pk]))
        await wait_for_reply(reply.pk)

        entry = await entry_of(reply)
        assert reserved.state == UsageEntry.State.RESERVED
        assert entry.state == UsageEntry.State.SETTLED
        assert entry.source == UsageEntry.Source.ESTIMATED
        assert entry.prompt_tokens == reserved.prompt_tokens > 0
        assert entry.completion_tokens == context.estimate_tokens(arrived)
        assert entry.total_tokens == entry.prompt_tokens + entry.completion_tokens
        spent = await sync_to_async(tokens_used_on)(alice.pk, usage.today())
        assert spent == entry.total_tokens

    async def test_a_reply_that_broke_off_counts_the_text_that_arrived(
        self, alice_async_client: AsyncClient, conversation, fake_openai
    ):
        fake_openai.script(Reply(chunks=WORDS, drop_after=4))

        await send(alice_async_client, conversation, "Count")
        reply = await last_reply(conversation)
        await wait_for_reply(reply.pk)

        await reply.arefresh_from_db()
        entry = await entry_of(reply)
        assert reply.status == Message.Status.ERROR
        assert reply.content == "".join(WORDS[:4])
        assert entry.completion_tokens == context.estimate_tokens(reply.content)
        assert entry.total_tokens == entry.prompt_tokens + entry.completion_tokens > 0

    async def test_a_request_the_provider_refused_costs_nothing(
        self, alice_async_client: AsyncClient, conversation, fake_openai
    ):
        fake_openai.script(Reply(status=400, error_message="No such model"))

        await send(alice_async_client, conversation, "Hello?")
        reply = await last_reply(conversation)
        await wait_for_reply(reply.pk)

        entry = await entry_of(reply)
        assert entry.state == UsageEntry.State.SETTLED
        assert entry.total_tokens == 0


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestAReplyReservesWhileItIsWritten:
    async def test_a_second_reply_is_refused_while_the_first_holds_the_rest_of_the_quota(
        self, alice: User, alice_async_client: AsyncClient, conversation, make_conversation,
        fake_openai, settings
    ):  # fmt: skip
        settings.CHAT_DAILY_TOKEN_QUOTA = 500
        fake_openai.script(Reply(chunks=WORDS, stall_after=2), Reply(text="Now it fits."))
        await send(alice_async_client, conversation, "A long answer, please")
        first = await last_reply(conversation)
        held = (await entry_of(first)).total_tokens
        other = await sync_to_async(make_conversation)(title="Meanwhile")

        refused = await send(alice_async_client, other, "Meanwhile, a question")

        assert held >= settings.CHAT_REPLY_RESERVE_TOKENS
        assert f"{held:,} of 500 tokens used today" in refused
        assert f"{held:,} of them are held for replies still being written" in refused
        assert not await other.messages.aexists()
        await stop.request_stop(first.pk)
        await wait_for_reply(first.pk)
        # Stopped early, the first reply gives back what it did not use.
        await send(alice_async_client, other, "Meanwhile, a question")
        answered = await last_reply(other)
        await wait_for_reply(answered.pk)
        await answered.arefresh_from_db()
        assert answered.content == "Now it fits."

    async def test_the_usage_page_shows_what_replies_in_progress_hold(
        self, alice: User, alice_async_client: AsyncClient, conversation, fake_openai, settings
    ):
        settings.CHAT_DAILY_TOKEN_QUOTA = 100_000
        fake_openai.script(Reply(chunks=WORDS, stall_after=2))
        await send(alice_async_client, conversation, "A long answer, please")
        reply = await last_reply(conversation)
        held = (await entry_of(reply)).total_tokens

        page = (await alice_async_client.get(reverse("usage"))).content.decode()

        assert f"<strong>{held:,}</strong> of your <strong>100,000</strong> tokens" in page
        assert f"{held:,} of these are held for replies still being written" in page
        await stop.request_stop(reply.pk)
        await wait_for_reply(reply.pk)


def dead_reply(conversation: Conversation, text: str) -> Message:
    """A reply whose process died mid-stream: streaming, silent for longer than
    CHAT_STALE_SECONDS, its reservation never settled."""
    long_ago = timezone.now() - timedelta(minutes=5)
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content=text,
        created_at=long_ago,
        updated_at=long_ago,
        metadata={"model": "gpt-4o-mini"},
    )
    UsageEntry.objects.create(
        user_id=conversation.owner_id,
        created_at=long_ago,
        model="gpt-4o-mini",
        prompt_tokens=40,
        completion_tokens=1024,
        total_tokens=1064,
        reply_id=reply.pk,
        conversation=conversation,
        message=reply,
    )
    return reply


@pytest.mark.django_db
class TestTheSweeperSettles:
    def test_a_reply_whose_process_died_is_settled_when_it_is_marked_interrupted(
        self, alice_client: Client, conversation
    ):
        reply = dead_reply(conversation, "Half an answer")

        alice_client.get(conversation.get_absolute_url())  # the page looks for dead replies

        reply.refresh_from_db()
        entry = UsageEntry.objects.get(reply_id=reply.pk)
        assert reply.status == Message.Status.INTERRUPTED
        assert entry.state == UsageEntry.State.SETTLED
        assert entry.source == UsageEntry.Source.ESTIMATED
        assert entry.total_tokens == 40 + context.estimate_tokens("Half an answer")

    def test_the_periodic_sweep_settles_what_a_dead_process_left_reserved(
        self, conversation, make_conversation
    ):
        interrupted = dead_reply(conversation, "Half an answer")
        # Died after storing its reply, before settling it.
        finished = dead_reply(make_conversation(), "A whole answer")
        Message.objects.filter(pk=finished.pk).update(
            status=Message.Status.COMPLETE,
            metadata={"usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}},
        )
        # Died with its conversation deleted meanwhile: what it held stays spent.
        orphan = dead_reply(make_conversation(), "")
        orphan.conversation.delete()

        sweeper.mark_stale_replies_interrupted()

        entries = {
            entry.reply_id: entry
            for entry in UsageEntry.objects.filter(
                reply_id__in=[interrupted.pk, finished.pk, orphan.pk]
            )
        }
        assert {entry.state for entry in entries.values()} == {UsageEntry.State.SETTLED}
        assert entries[interrupted.pk].total_tokens == 40 + context.estimate_tokens(
            "Half an answer"
        )
        assert entries[finished.pk].total_tokens == 35
        assert entries[finished.pk].source == UsageEntry.Source.REPORTED
        assert entries[orphan.pk].total_tokens == 1064

    def test_a_late_report_from_a_generator_taken_for_dead_replaces_the_estimate(
        self, conversation
    ):
        reply = dead_reply(conversation, "Half an answer")
        sweeper.mark_stale_replies_interrupted()

        # The generator was only paused (SIGSTOP): it comes back and finishes.
        report = {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51}
        quota.settle(reply.pk, "Half an answer, whole", Message.Status.COMPLETE, {"usage": report})
        # A later estimate never replaces a report.
        quota.settle(reply.pk, "Half", Message.Status.INTERRUPTED, {})

        entry = UsageEntry.objects.get(reply_id=reply.pk)
        assert (entry.source, entry.total_tokens) == (UsageEntry.Source.REPORTED, 51)


@pytest.mark.django_db
def test_the_migration_carries_the_usage_history_into_the_ledger(alice: User, conversation):
    reported = paid_reply(conversation, prompt=70, completion=30)
    unreported = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, content="Stopped early",
        status=Message.Status.STOPPED, metadata={"model": "llama3.2"},
    )  # fmt: skip
    streaming = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
    )
    UsageEntry.objects.all().delete()  # as before the ledger existed
    migration = importlib.import_module("conversations.migrations.0005_usage_ledger")

    migration.copy_usage_into_the_ledger(apps, None)

    entries = {entry.reply_id: entry for entry in UsageEntry.objects.all()}
    assert set(entries) == set(
        conversation.messages.filter(role=Message.Role.ASSISTANT).values_list("pk", flat=True)
    )
    copied = entries[reported.pk]
    assert (copied.user_id, copied.created_at, copied.model) == (
        alice.pk,
        reported.created_at,
        "gpt-4o-mini",
    )
    assert (copied.prompt_tokens, copied.completion_tokens, copied.total_tokens) == (70, 30, 100)
    assert (copied.state, copied.source) == (UsageEntry.State.SETTLED, UsageEntry.Source.REPORTED)
    assert (entries[unreported.pk].total_tokens, entries[unreported.pk].model) == (0, "llama3.2")
    assert entries[streaming.pk].state == UsageEntry.State.RESERVED
    assert tokens_used_on(alice.pk, usage.today()) == 100
