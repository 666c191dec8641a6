"""The daily token quota: checked before the model is asked, in every way of asking.

A refused message is not stored and stays in the composer; the model hears nothing of it (the
fake provider's request log stays empty); the user is told how much was used and when the
quota resets, which is the next midnight in TIME_ZONE.
"""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, User
from conversations import usage
from conversations.models import Conversation, Message
from conversations.replies import quota
from tests.support.fake_openai import Reply
from tests.support.ledger import paid_reply
from tests.support.replies import wait_for_reply

HTMX = {"HX-Request": "true"}
QUOTA = 1000


def spend(conversation: Conversation, total: int, *, at=None) -> Message:
    """A finished reply that cost `total` tokens, written `at` (now by default)."""
    return paid_reply(conversation, prompt=total - 1, completion=1, created_at=at)


aspend = sync_to_async(spend)


async def messages_of(conversation: Conversation) -> list[Message]:
    return [m async for m in conversation.messages.order_by("created_at")]


def travel_to(monkeypatch, moment) -> None:
    """Make it `moment` for everything that asks Django what time it is."""
    monkeypatch.setattr(timezone, "now", lambda: moment)


@pytest.fixture
def site_quota(settings) -> int:
    settings.CHAT_DAILY_TOKEN_QUOTA = QUOTA
    return QUOTA


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestQuotaReached:
    async def test_the_next_send_is_refused_kept_in_the_composer_and_never_reaches_the_model(
        self, alice_async_client: AsyncClient, conversation, fake_openai, site_quota
    ):
        await aspend(conversation, site_quota)
        before = await messages_of(conversation)

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]),
            {"text": "One more question <b>please</b>"},
            headers=HTMX,
        )

        field = response.content.decode()
        assert response.status_code == 200
        assert "One more question &lt;b&gt;please&lt;/b&gt;</textarea>" in field
        assert f"{site_quota:,} of {site_quota:,} tokens used today" in field
        assert "Your message was not sent." in field
        assert await messages_of(conversation) == before
        assert fake_openai.requests == []

    async def test_the_message_says_when_the_quota_resets_in_the_sites_time_zone(
        self, alice_async_client: AsyncClient, conversation, fake_openai, site_quota, settings
    ):
        settings.TIME_ZONE = "America/New_York"
        await aspend(conversation, site_quota + 250)
        midnight = timezone.localtime(quota.next_reset(), timezone.get_default_timezone())

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Hello?"}, headers=HTMX
        )

        field = response.content.decode()
        assert (midnight.hour, midnight.minute) == (0, 0)
        assert midnight.date() == usage.today() + timedelta(days=1)
        assert f"{site_quota + 250:,} of {site_quota:,} tokens used today" in field
        expected = f"resets at midnight ({midnight.day} {midnight:%B %Y}, 00:00 {midnight:%Z})"
        assert expected in field
        assert fake_openai.requests == []

    async def test_a_first_message_starts_no_conversation(
        self, alice, alice_async_client: AsyncClient, conversation, fake_openai, site_quota
    ):
        await aspend(conversation, site_quota)

        response = await alice_async_client.post(
            reverse("conversation_start"), {"text": "A new topic"}, headers=HTMX
        )

        assert "A new topic</textarea>" in response.content.decode()
        assert "HX-Redirect" not in response
        assert await Conversation.objects.acount() == 1
        assert fake_openai.requests == []

    async def test_without_htmx_the_page_comes_back_with_the_message_and_the_reason(
        self, alice_async_client: AsyncClient, conversation, fake_openai, site_quota
    ):
        await aspend(conversation, site_quota)

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Plain form"}
        )

        page = response.content.decode()
        assert response.status_code == 200
        assert "Plain form</textarea>" in page
        assert "You have reached your daily limit" in page
        assert fake_openai.requests == []

    async def test_regenerate_and_edit_are_refused_too(
        self, alice_async_client: AsyncClient, conversation, fake_openai, site_quota
    ):
        await aspend(conversation, site_quota)
        question = await conversation.messages.filter(role=Message.Role.USER).alast()
        before = await messages_of(conversation)

        regenerated = await alice_async_client.post(
            reverse("reply_regenerate", args=[conversation.pk]), headers=HTMX
        )
        edited = await alice_async_client.post(
            reverse("message_edit", args=[conversation.pk, question.pk]),
            {"text": "Where should I go in June?"},
            headers=HTMX,
        )

        assert "You have reached your daily limit" in regenerated.content.decode()
        assert "You have reached your daily limit" in edited.content.decode()
        assert "Where should I go in June?</textarea>" in edited.content.decode()
        assert await messages_of(conversation) == before
        assert fake_openai.requests == []


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestQuotaAllows:
    async def test_sending_is_allowed_again_after_midnight(
        self, alice_async_client: AsyncClient, conversation, fake_openai, site_quota, monkeypatch
    ):
        settings_zone = timezone.get_default_timezone()
        await aspend(conversation, site_quota)
        refused = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Tonight?"}, headers=HTMX
        )
        assert "daily limit" in refused.content.decode()

        travel_to(monkeypatch, quota.next_reset() + timedelta(minutes=1))
        fake_openai.script(Reply(text="Good morning."))
        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Tomorrow?"}, headers=HTMX
        )

        assert "daily limit" not in response.content.decode()
        *_, question, reply = await messages_of(conversation)
        assert question.content == "Tomorrow?"
        assert timezone.localtime(question.created_at, settings_zone).hour == 0
        [request] = await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        assert request["messages"][-1] == {"role": "user", "content": "Tomorrow?"}
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        assert reply.content == "Good morning."

    async def test_below_the_quota_the_reply_comes_and_counts_towards_it(
        self, alice_async_client: AsyncClient, conversation, fake_openai, site_quota
    ):
        await aspend(conversation, site_quota - 1)

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Last one"}, headers=HTMX
        )
        *_, reply = await messages_of(conversation)
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        again = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "And another"}, headers=HTMX
        )

        assert reply.status == Message.Status.COMPLETE
        assert reply.usage["total_tokens"] > 0
        used = site_quota - 1 + reply.usage["total_tokens"]
        assert f"{used:,} of {site_quota:,} tokens used today" in again.content.decode()
        assert len(fake_openai.requests) == 1

    async def test_another_users_spending_does_not_count(
        self, bob: User, alice_async_client: AsyncClient, conversation, make_conversation,
        fake_openai, site_quota
    ):  # fmt: skip
        bobs = await sync_to_async(make_conversation)(owner=bob)
        await aspend(bobs, site_quota * 5)

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Mine"}, headers=HTMX
        )

        assert "daily limit" not in response.content.decode()
        *_, reply = await messages_of(conversation)
        await wait_for_reply(reply.pk)
        assert len(fake_openai.requests) == 1


@pytest.mark.django_db
class TestPerUserQuota:
    def test_a_users_own_quota_wins_over_the_site_default(self, alice: User, settings):
        settings.CHAT_DAILY_TOKEN_QUOTA = 100
        assert quota.quota_for(alice) == 100

        alice.daily_token_quota = 5000
        assert quota.quota_for(alice) == 5000
        alice.daily_token_quota = 0  # no limit for this user, whatever the site's
        assert quota.quota_for(alice) == 0

    @pytest.mark.asyncio
    @pytest.mark.django_db(transaction=True)
    async def test_a_smaller_own_quota_blocks_even_without_a_site_quota(
        self, alice: User, alice_async_client: AsyncClient, conversation, fake_openai, settings
    ):
        settings.CHAT_DAILY_TOKEN_QUOTA = 0
        alice.daily_token_quota = 50
        await alice.asave(update_fields=["daily_token_quota"])
        await aspend(conversation, 60)

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Hi"}, headers=HTMX
        )

        assert "60 of 50 tokens used today" in response.content.decode()
        assert fake_openai.requests == []

    @pytest.mark.asyncio
    @pytest.mark.django_db(transaction=True)
    async def test_an_unlimited_user_is_not_held_to_the_site_quota(
        self, alice: User, alice_async_client: AsyncClient, conversation, fake_openai, settings
    ):
        settings.CHAT_DAILY_TOKEN_QUOTA = 50
        alice.daily_token_quota = 0
        await alice.asave(update_fields=["daily_token_quota"])
        await aspend(conversation, 60)

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Hi"}, headers=HTMX
        )

        *_, reply = await messages_of(conversation)
        await wait_for_reply(reply.pk)
        assert len(fake_openai.requests) == 1

    def test_staff_set_a_users_quota_in_the_admin(self, alice: User, settings):
        staff = User.objects.create_superuser("ops@example.com", "x")
        client = Client()
        client.force_login(staff)
        url = reverse("admin:accounts_user_change", args=[alice.pk])

        page = client.get(url).content.decode()

        assert 'name="daily_token_quota"' in page


@pytest.mark.django_db
class TestUsagePageQuota:
    def test_it_shows_todays_use_against_the_quota_and_when_it_resets(
        self, alice: User, alice_client: Client, conversation, site_quota
    ):
        spent = spend(conversation, 250).usage["total_tokens"]

        page = alice_client.get(reverse("usage")).content.decode()

        assert f"<strong>{spent}</strong> of your <strong>{site_quota:,}</strong> tokens" in page
        assert f"{site_quota - spent:,} left" in page
        assert f'max="{site_quota}"' in page and f'value="{spent}"' in page
        midnight = timezone.localtime(quota.next_reset())
        assert f"resets at midnight: {midnight.day} {midnight:%B %Y}, 00:00" in page


@pytest.mark.django_db(transaction=True)
class TestQuotaThroughTheApi:
    """Scripts are held to the same quota as the pages, with a JSON 429 carrying the reason."""

    def test_a_message_is_refused_with_429_and_nothing_is_stored(
        self, alice: User, conversation, fake_openai, site_quota
    ):
        spend(conversation, site_quota)
        before = list(conversation.messages.order_by("created_at"))
        key = ApiToken.issue(alice, "script")[1]
        client = Client(headers={"Authorization": f"Bearer {key}"})

        response = client.post(
            reverse("api_messages", args=[conversation.pk]),
            json.dumps({"content": "One more"}),
            content_type="application/json",
        )

        assert response.status_code == 429
        refusal = response.json()["error"]
        assert refusal["code"] == "quota_exceeded"
        assert f"{site_quota:,} of {site_quota:,} tokens used" in refusal["message"]
        assert list(conversation.messages.order_by("created_at")) == before
        assert fake_openai.requests == []

    def test_creating_a_conversation_with_a_message_is_refused_before_anything_is_stored(
        self, alice: User, conversation, fake_openai, site_quota
    ):
        spend(conversation, site_quota)
        key = ApiToken.issue(alice, "script")[1]
        client = Client(headers={"Authorization": f"Bearer {key}"})

        response = client.post(
            reverse("api_conversations"),
            json.dumps({"title": "New", "content": "Hello"}),
            content_type="application/json",
        )

        assert response.status_code == 429
        assert Conversation.objects.filter(owner=alice).count() == 1
        assert fake_openai.requests == []
