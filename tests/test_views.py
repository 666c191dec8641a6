"""The chat pages and the POSTs that send messages and stop replies."""

import asyncio
import re
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from django.urls import reverse
from django.utils import timezone

from conversations.forms import MessageForm
from conversations.models import Conversation, Message
from conversations.replies import generate, stop, turns
from tests.support.fake_openai import Reply
from tests.support.replies import wait_for_reply

ALREADY_STREAMING = "Wait for the current reply to finish"
HTMX = {"HX-Request": "true"}


def page_urls(conversation: Conversation) -> dict[str, tuple[str, str]]:
    return {
        "home": ("get", reverse("home")),
        "conversation": ("get", conversation.get_absolute_url()),
        "start": ("post", reverse("conversation_start")),
        "send": ("post", reverse("message_send", args=[conversation.pk])),
        "stop": ("post", reverse("reply_stop", args=[conversation.pk])),
    }


def sidebar_ids(page: str) -> list[str]:
    sidebar = page.split('id="conversation-list"', 1)[1].split("</ul>", 1)[0]
    return re.findall(r'<li id="conversation-([0-9a-f-]+)"', sidebar)


async def messages_of(conversation: Conversation) -> list[Message]:
    return [message async for message in conversation.messages.order_by("created_at")]


async def stored_text(reply: Message, expected: str) -> None:
    """Wait until the generator has saved this much of the streaming reply."""
    async with asyncio.timeout(5):
        while reply.content != expected:
            await asyncio.sleep(0.01)
            await reply.arefresh_from_db()


@pytest.mark.django_db
class TestAccess:
    @pytest.mark.parametrize("view", ["home", "conversation", "start", "send", "stop"])
    def test_anonymous_visitors_are_sent_to_the_login_page(self, client, conversation, view):
        method, url = page_urls(conversation)[view]

        response = getattr(client, method)(url, {"text": "Hello"} if method == "post" else None)

        assert response.status_code == 302
        assert response["Location"] == f"{reverse('account_login')}?next={url}"
        assert conversation.messages.count() == 2
        assert Conversation.objects.count() == 1

    @pytest.mark.parametrize("view", ["conversation", "send", "stop"])
    def test_another_user_gets_not_found_and_never_the_data(self, bob_client, conversation, view):
        method, url = page_urls(conversation)[view]

        response = getattr(bob_client, method)(url, {"text": "Hello"} if method == "post" else None)

        assert response.status_code == 404
        assert conversation.title not in response.content.decode()
        assert "Lisbon" not in response.content.decode()
        assert conversation.messages.count() == 2

    def test_another_users_conversations_are_not_in_my_sidebar(self, bob_client, conversation):
        response = bob_client.get(reverse("home"))

        assert response.status_code == 200
        assert sidebar_ids(response.content.decode()) == []
        assert conversation.title not in response.content.decode()

    def test_an_unknown_conversation_is_not_found(self, alice_client):
        response = alice_client.get(reverse("conversation", args=[uuid.uuid4()]))

        assert response.status_code == 404


@pytest.mark.django_db
class TestPages:
    def test_the_owner_sees_the_conversation_and_its_history_in_order(
        self, alice_client, conversation
    ):
        response = alice_client.get(conversation.get_absolute_url())

        page = response.content.decode()
        assert response.status_code == 200
        assert '<h1 id="conversation-title">Trip planning</h1>' in page
        question, answer = conversation.messages.order_by("created_at")
        assert page.index(f'id="message-{question.pk}"') < page.index(f'id="message-{answer.pk}"')
        assert "Where should I go in May?" in page
        assert "Try <strong>Lisbon</strong>." in page
        assert f'ws-connect="/ws/c/{conversation.pk}/' in page
        assert f'href="{conversation.get_absolute_url()}" aria-current="page"' in page

    def test_the_new_chat_page_offers_an_empty_composer(self, alice_client):
        response = alice_client.get(reverse("home"))

        page = response.content.decode()
        assert response.status_code == 200
        assert f'hx-post="{reverse("conversation_start")}"' in page
        assert "No conversations yet" in page
        assert "/ws/c/" not in page

    def test_a_reply_whose_generator_died_shows_as_interrupted(
        self, alice_client, conversation, settings
    ):
        reply = conversation.messages.create(
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            content="Half an ans",
            updated_at=timezone.now() - timedelta(seconds=settings.CHAT_STALE_SECONDS + 1),
        )

        page = alice_client.get(conversation.get_absolute_url()).content.decode()

        reply.refresh_from_db()
        assert reply.status == Message.Status.INTERRUPTED
        assert "Interrupted: the server stopped while writing this reply." in page
        assert "Half an ans" in page


@pytest.mark.django_db
class TestRefusedMessages:
    @pytest.mark.parametrize("text", ["", "   \n\t  "])
    def test_an_empty_message_is_refused(self, alice_client, conversation, text):
        before = conversation.updated_at

        response = alice_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": text}, headers=HTMX
        )

        assert response.status_code == 200
        assert "Write a message first." in response.content.decode()
        assert conversation.messages.count() == 2
        conversation.refresh_from_db()
        assert conversation.updated_at == before

    def test_a_message_over_the_limit_is_refused_and_kept_in_the_composer(
        self, alice_client, conversation, settings
    ):
        settings.CHAT_MAX_MESSAGE_CHARS = 40
        text = "x" * (settings.CHAT_MAX_MESSAGE_CHARS + 1)

        response = alice_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": text}, headers=HTMX
        )

        page = response.content.decode()
        assert response.status_code == 200
        assert f"This message is {len(text)} characters long; the limit is 40." in page
        assert f">{text}</textarea>" in page
        assert 'aria-invalid="true"' in page
        assert conversation.messages.count() == 2

    def test_a_message_at_the_limit_is_accepted_by_the_form(self, settings):
        settings.CHAT_MAX_MESSAGE_CHARS = 40

        assert MessageForm({"text": "x" * 40}).is_valid()

    @pytest.mark.parametrize("text", ["", "y" * 41])
    def test_a_refused_first_message_creates_no_conversation(self, alice_client, settings, text):
        settings.CHAT_MAX_MESSAGE_CHARS = 40

        response = alice_client.post(reverse("conversation_start"), {"text": text}, headers=HTMX)

        assert response.status_code == 200
        assert 'class="composer-errors"' in response.content.decode()
        assert re.search(r"Write a message first\.|the limit is 40\.", response.content.decode())
        assert not Conversation.objects.exists()
        assert not Message.objects.exists()

    @pytest.mark.parametrize("view", ["start", "send", "stop"])
    def test_a_post_without_a_csrf_token_is_forbidden(self, alice, conversation, view):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(alice)
        _, url = page_urls(conversation)[view]

        response = browser.post(url, {"text": "Forged message"})

        assert response.status_code == 403
        assert Conversation.objects.count() == 1
        assert conversation.messages.count() == 2


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestSending:
    async def test_the_message_is_stored_before_the_model_is_asked_and_the_reply_streams(
        self, alice_async_client, conversation, fake_openai
    ):
        fake_openai.script(Reply(text="June is warmer.", first_byte_delay=0.5))

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "And in June?"}, headers=HTMX
        )

        assert response.status_code == 200
        # An emptied field comes back; the Stop button and the disabled Send come over the
        # websocket, in order with the reply's own events.
        field = response.content.decode()
        assert 'id="composer-field"' in field
        assert 'id="composer-input"' in field and "And in June?" not in field
        assert "composer-actions" not in field
        *_, question, reply = await messages_of(conversation)
        assert (question.role, question.content) == (Message.Role.USER, "And in June?")
        assert (reply.role, reply.status, reply.content) == (
            Message.Role.ASSISTANT,
            Message.Status.STREAMING,
            "",
        )
        # The model is asked with the history read back from the database, so the question
        # was stored first.
        [request] = await asyncio.to_thread(fake_openai.wait_for_requests, 1)
        assert request["messages"][-1] == {"role": "user", "content": "And in June?"}

        await wait_for_reply(reply.pk)

        await reply.arefresh_from_db()
        assert reply.status == Message.Status.COMPLETE
        assert reply.content == "June is warmer."

    async def test_without_htmx_sending_redirects_back_to_the_conversation(
        self, alice_async_client, conversation, fake_openai
    ):
        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Thanks!"}
        )

        assert response.status_code == 302
        assert response["Location"] == conversation.get_absolute_url()
        *_, reply = await messages_of(conversation)
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        assert reply.status == Message.Status.COMPLETE

    async def test_the_first_message_starts_a_conversation_titled_after_it(
        self, alice, alice_async_client, fake_openai
    ):
        text = "Plan a   week in Portugal for two people who love food, trains and old bookshops"

        response = await alice_async_client.post(
            reverse("conversation_start"), {"text": text}, headers=HTMX
        )

        conversation = await Conversation.objects.aget()
        assert response.status_code == 200
        assert response["HX-Redirect"] == conversation.get_absolute_url()
        assert conversation.owner_id == alice.pk
        assert len(conversation.title) == turns.TITLE_LENGTH
        assert conversation.title.startswith("Plan a week in Portugal")
        assert conversation.title.endswith("…")
        question, reply = await messages_of(conversation)
        assert question.content == text
        await wait_for_reply(reply.pk)
        [request] = fake_openai.requests
        assert request["messages"] == [{"role": "user", "content": text}]

    async def test_without_a_provider_the_offline_model_answers(
        self, alice_async_client, conversation
    ):
        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Are you there?"}
        )
        *_, reply = await messages_of(conversation)

        await wait_for_reply(reply.pk)

        await reply.arefresh_from_db()
        assert reply.status == Message.Status.COMPLETE
        assert "offline demo model" in reply.content
        assert "> Are you there?" in reply.content
        assert reply.metadata["model"] == "offline-demo"
        assert reply.usage["completion_tokens"] > 0

    async def test_a_second_message_while_a_reply_streams_is_refused(
        self, alice_async_client, conversation, fake_openai
    ):
        # The model stalls after its first words, so the reply is surely still streaming.
        fake_openai.script(Reply(text="A slow and thoughtful answer", stall_after=1))
        send_url = reverse("message_send", args=[conversation.pk])
        await alice_async_client.post(send_url, {"text": "First question"}, headers=HTMX)
        await asyncio.to_thread(fake_openai.wait_for_requests, 1)

        response = await alice_async_client.post(
            send_url, {"text": "Impatient follow-up"}, headers=HTMX
        )

        assert response.status_code == 200
        assert ALREADY_STREAMING in response.content.decode()
        *_, question, reply = await messages_of(conversation)
        assert question.content == "First question"
        assert not await conversation.messages.filter(content="Impatient follow-up").aexists()
        assert reply.status == Message.Status.STREAMING
        assert len(fake_openai.requests) == 1
        await alice_async_client.post(reverse("reply_stop", args=[conversation.pk]))
        await wait_for_reply(reply.pk)

    async def test_stop_ends_the_reply_and_keeps_what_arrived(
        self, alice_async_client, conversation, fake_openai
    ):
        words = [f" word{n}" for n in range(10)]
        fake_openai.script(Reply(chunks=words, stall_after=3))
        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Count"}, headers=HTMX
        )
        *_, reply = await messages_of(conversation)
        arrived = "".join(words[:3])
        await stored_text(reply, arrived)

        response = await alice_async_client.post(
            reverse("reply_stop", args=[conversation.pk]), headers=HTMX
        )
        await wait_for_reply(reply.pk)

        assert response.status_code == 204
        await reply.arefresh_from_db()
        assert reply.status == Message.Status.STOPPED
        assert reply.metadata["finish_reason"] == "stopped"
        assert reply.content == arrived

    async def test_a_stop_sent_before_the_generation_listens_still_stops_it(
        self, conversation, fake_openai
    ):
        fake_openai.script(Reply(chunks=[f" word{n}" for n in range(50)], delay=0.05))
        reply, history = await turns.store_turn(conversation, "Count", replacing=None)

        # The stop arrives before the generation has joined its control group.
        await stop.request_stop(reply.pk)
        generate.start(conversation.pk, reply, history)
        await wait_for_reply(reply.pk)

        await reply.arefresh_from_db()
        assert reply.status == Message.Status.STOPPED
        assert reply.content == ""

    async def test_stopping_when_nothing_streams_just_returns_to_the_conversation(
        self, alice_async_client, conversation
    ):
        response = await alice_async_client.post(reverse("reply_stop", args=[conversation.pk]))

        assert response.status_code == 302
        assert response["Location"] == conversation.get_absolute_url()
        assert [m.status for m in await messages_of(conversation)] == ["complete", "complete"]

    async def test_an_interrupted_reply_does_not_block_the_next_message(
        self, alice_async_client, conversation, fake_openai, settings
    ):
        stale = await conversation.messages.acreate(
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            updated_at=timezone.now() - timedelta(seconds=settings.CHAT_STALE_SECONDS + 1),
        )

        response = await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Still there?"}, headers=HTMX
        )

        assert ALREADY_STREAMING not in response.content.decode()
        *_, reply = await messages_of(conversation)
        await wait_for_reply(reply.pk)
        await stale.arefresh_from_db()
        await reply.arefresh_from_db()
        assert stale.status == Message.Status.INTERRUPTED
        assert reply.status == Message.Status.COMPLETE

    async def test_the_sidebar_lists_the_most_recently_active_conversation_first(
        self, alice_async_client, make_conversation, fake_openai
    ):
        now = timezone.now()
        oldest, middle, newest = [
            await sync_to_async(make_conversation)(
                title=title, updated_at=now - timedelta(hours=age)
            )
            for title, age in [("oldest", 3), ("middle", 2), ("newest", 1)]
        ]
        home = (await alice_async_client.get(reverse("home"))).content.decode()
        assert sidebar_ids(home) == [str(c.pk) for c in (newest, middle, oldest)]

        await alice_async_client.post(
            reverse("message_send", args=[oldest.pk]), {"text": "Back to this one"}, headers=HTMX
        )
        *_, reply = await messages_of(oldest)
        await wait_for_reply(reply.pk)

        home = (await alice_async_client.get(reverse("home"))).content.decode()
        assert sidebar_ids(home) == [str(c.pk) for c in (oldest, newest, middle)]

    async def test_the_page_provides_the_csrf_token_htmx_posts_with(
        self, alice, conversation, fake_openai
    ):
        browser = AsyncClient(enforce_csrf_checks=True)
        await browser.aforce_login(alice)
        page = (await browser.get(conversation.get_absolute_url())).content.decode()
        token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', page)[1]
        send_url = reverse("message_send", args=[conversation.pk])

        forged = await browser.post(send_url, {"text": "No token"}, headers=HTMX)
        sent = await browser.post(
            send_url, {"text": "With token"}, headers={**HTMX, "X-CSRFToken": token}
        )

        assert forged.status_code == 403
        assert sent.status_code == 200
        *_, question, reply = await messages_of(conversation)
        assert question.content == "With token"
        assert not await conversation.messages.filter(content="No token").aexists()
        await wait_for_reply(reply.pk)
