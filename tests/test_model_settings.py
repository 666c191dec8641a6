"""A conversation's settings (model, system prompt, temperature), chosen on the new-chat page or
changed from the chat page, and each user's defaults for new conversations."""

import asyncio

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from conversations.llm.providers import choice_value
from conversations.models import Conversation, Message
from tests.support.fake_openai import Reply
from tests.support.providers import picker, selected
from tests.support.replies import wait_for_reply
from tests.support.xss import parse

HTMX = {"HX-Request": "true"}
ROUTER_GPT = choice_value("router", "openai/gpt-4o")


def settings_url(conversation: Conversation) -> str:
    return reverse("conversation_settings", args=[conversation.pk])


@pytest.mark.django_db
class TestConversationSettings:
    def test_the_chat_page_shows_the_conversations_settings(
        self, two_providers, alice_client, make_conversation
    ):
        conversation = make_conversation(
            metadata={
                "provider": "router",
                "model": "openai/gpt-4o",
                "system_prompt": "Be terse.",
                "temperature": 0.7,
            }
        )

        html = alice_client.get(conversation.get_absolute_url()).content.decode()

        page = parse(html)
        panel = page.by_id("conversation-settings")
        assert selected(html) == ROUTER_GPT
        assert panel.all("textarea")[0].text() == "Be terse."
        assert page.by_id("settings-temperature").attrs["value"] == "0.7"
        assert page.by_id("model-badge").text() == "openai/gpt-4o"

    def test_the_owner_changes_them_and_the_panel_says_they_are_saved(
        self, two_providers, alice_client, conversation
    ):
        response = alice_client.post(
            settings_url(conversation),
            {"model": ROUTER_GPT, "system_prompt": "  Speak French.  ", "temperature": "1.25"},
            headers=HTMX,
        )

        assert response.status_code == 200
        panel = parse(response.content.decode()).by_id("conversation-settings")
        assert "open" in panel.attrs
        assert "Saved" in panel.text()
        badge = parse(response.content.decode()).by_id("model-badge")
        assert (badge.attrs["hx-swap-oob"], badge.text()) == ("true", "openai/gpt-4o")
        conversation.refresh_from_db()
        assert conversation.metadata["provider"] == "router"
        assert conversation.metadata["model"] == "openai/gpt-4o"
        assert conversation.metadata["system_prompt"] == "Speak French."
        assert conversation.metadata["temperature"] == 1.25
        assert conversation.title == "Trip planning"  # nothing else changed

    def test_without_htmx_saving_goes_back_to_the_conversation(
        self, two_providers, alice_client, conversation
    ):
        response = alice_client.post(settings_url(conversation), {"model": ROUTER_GPT})

        assert response.status_code == 302
        assert response["Location"] == conversation.get_absolute_url()

    @pytest.mark.parametrize(
        ("data", "complaint"),
        [
            ({"model": ROUTER_GPT, "temperature": "2.5"}, "less than or equal to 2"),
            ({"model": ROUTER_GPT, "temperature": "-1"}, "greater than or equal to 0"),
            ({"model": choice_value("router", "not-on-offer")}, "Select a valid choice"),
            ({"model": choice_value("nowhere", "openai/gpt-4o")}, "Select a valid choice"),
            ({}, "Choose a model"),
        ],
    )
    def test_a_wrong_value_is_explained_and_nothing_changes(
        self, two_providers, alice_client, conversation, data, complaint
    ):
        response = alice_client.post(settings_url(conversation), data, headers=HTMX)

        assert response.status_code == 200
        assert complaint in response.content.decode()
        conversation.refresh_from_db()
        assert conversation.metadata == {}

    def test_a_model_no_longer_on_offer_stays_chosen_until_changed(
        self, two_providers, alice_client, make_conversation
    ):
        conversation = make_conversation(metadata={"provider": "retired", "model": "old:7b"})

        page = alice_client.get(conversation.get_absolute_url()).content.decode()
        saved = alice_client.post(
            settings_url(conversation),
            {"model": choice_value("retired", "old:7b"), "system_prompt": "New prompt"},
            headers=HTMX,
        )

        assert picker(page)["retired (no longer configured)"] == ["old:7b"]
        assert saved.status_code == 200
        conversation.refresh_from_db()
        assert conversation.metadata["system_prompt"] == "New prompt"
        assert conversation.metadata["model"] == "old:7b"

    def test_another_user_cannot_see_or_change_them(self, two_providers, bob_client, conversation):
        response = bob_client.post(settings_url(conversation), {"model": ROUTER_GPT})

        assert response.status_code == 404
        conversation.refresh_from_db()
        assert conversation.metadata == {}

    def test_an_anonymous_visitor_is_sent_to_sign_in(self, two_providers, conversation):
        response = Client().post(settings_url(conversation), {"model": ROUTER_GPT})

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))

    def test_a_forged_request_without_the_csrf_token_is_refused(
        self, two_providers, alice, conversation
    ):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(alice)

        response = browser.post(settings_url(conversation), {"model": ROUTER_GPT})

        assert response.status_code == 403
        conversation.refresh_from_db()
        assert conversation.metadata == {}

    def test_a_get_changes_nothing(self, two_providers, alice_client, conversation):
        assert alice_client.get(settings_url(conversation)).status_code == 405


@pytest.mark.django_db
class TestAccountDefaults:
    def test_the_page_is_linked_from_the_chat_and_shows_the_site_defaults(
        self, two_providers, alice_client
    ):
        chat = parse(alice_client.get(reverse("home")).content.decode())
        page = alice_client.get(reverse("account_settings")).content.decode()

        assert reverse("account_settings") in [a.attrs.get("href") for a in chat.all("a")]
        first = parse(page).by_id("defaults-model").all("option")[0]
        assert first.text() == "Site default (llama3.2:3b · Local Ollama)"
        assert picker(page, "defaults-model")["Router"] == [
            "meta-llama/llama-3.1-8b-instruct",
            "openai/gpt-4o",
        ]

    def test_saved_defaults_start_every_new_conversation(self, two_providers, alice, alice_client):
        saved = alice_client.post(
            reverse("account_settings"),
            {"model": ROUTER_GPT, "system_prompt": "Always answer in haiku."},
            follow=True,
        )

        assert "Saved" in saved.content.decode()
        alice.refresh_from_db()
        assert (alice.default_provider, alice.default_model) == ("router", "openai/gpt-4o")
        new_chat = alice_client.get(reverse("home")).content.decode()
        assert selected(new_chat) == ROUTER_GPT
        assert parse(new_chat).by_id("settings-system-prompt").text() == "Always answer in haiku."

    def test_blank_defaults_mean_the_sites(self, two_providers, alice, alice_client):
        alice.default_provider, alice.default_model = "router", "openai/gpt-4o"
        alice.save()

        alice_client.post(reverse("account_settings"), {"model": "", "system_prompt": ""})

        alice.refresh_from_db()
        assert (alice.default_provider, alice.default_model) == ("", "")
        assert selected(alice_client.get(reverse("home")).content.decode()) == choice_value(
            "local", "llama3.2:3b"
        )

    def test_a_default_whose_provider_is_gone_gives_way_to_the_sites(
        self, two_providers, alice, alice_client
    ):
        alice.default_provider, alice.default_model = "retired", "old:7b"
        alice.save()

        new_chat = alice_client.get(reverse("home")).content.decode()

        assert selected(new_chat) == choice_value("local", "llama3.2:3b")

    def test_each_user_sees_and_changes_only_their_own(self, two_providers, alice, bob_client):
        alice.default_system_prompt = "Alice's private prompt"
        alice.save()

        page = bob_client.get(reverse("account_settings")).content.decode()
        bob_client.post(reverse("account_settings"), {"model": ROUTER_GPT, "system_prompt": "B"})

        assert "Alice's private prompt" not in page
        alice.refresh_from_db()
        assert alice.default_system_prompt == "Alice's private prompt"
        assert User.objects.get(email="bob@example.com").default_system_prompt == "B"

    def test_an_anonymous_visitor_is_sent_to_sign_in(self, db):
        response = Client().get(reverse("account_settings"))

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestNewConversations:
    async def test_a_first_message_without_settings_starts_from_the_users_defaults(
        self, two_providers, alice, alice_async_client
    ):
        alice.default_provider, alice.default_model = "router", "openai/gpt-4o"
        alice.default_system_prompt = "Always answer in haiku."
        await alice.asave()

        await alice_async_client.post(reverse("conversation_start"), {"text": "Hello"})

        conversation = await Conversation.objects.aget()
        assert conversation.metadata["provider"] == "router"
        assert conversation.metadata["model"] == "openai/gpt-4o"
        [request] = await asyncio.to_thread(two_providers.router.wait_for_requests, 1)
        assert request["model"] == "openai/gpt-4o"
        assert request["messages"][0] == {"role": "system", "content": "Always answer in haiku."}
        await reply_when_finished(conversation)

    async def test_without_user_defaults_the_site_defaults_apply(
        self, two_providers, settings, alice_async_client
    ):
        settings.CHAT_SYSTEM_PROMPT = "Site-wide prompt."
        settings.CHAT_DEFAULT_PROVIDER = "router"

        await alice_async_client.post(reverse("conversation_start"), {"text": "Hello"})

        [request] = await asyncio.to_thread(two_providers.router.wait_for_requests, 1)
        assert request["model"] == "openai/gpt-4o"
        assert request["messages"][0] == {"role": "system", "content": "Site-wide prompt."}
        await reply_when_finished(await Conversation.objects.aget())

    async def test_settings_chosen_on_the_new_chat_page_win_over_the_defaults(
        self, two_providers, alice, alice_async_client
    ):
        alice.default_provider, alice.default_model = "router", "openai/gpt-4o"
        await alice.asave()
        two_providers.local.script(Reply(text="Local answer."))

        await alice_async_client.post(
            reverse("conversation_start"),
            {"text": "Hello", "model": choice_value("local", "qwen2.5:7b-instruct")},
        )

        [request] = await asyncio.to_thread(two_providers.local.wait_for_requests, 1)
        assert request["model"] == "qwen2.5:7b-instruct"
        assert two_providers.router.requests == []
        reply = await reply_when_finished(await Conversation.objects.aget())
        assert reply.content == "Local answer."

    async def test_wrong_settings_on_the_new_chat_page_start_nothing(
        self, two_providers, alice_async_client
    ):
        response = await alice_async_client.post(
            reverse("conversation_start"),
            {"text": "Hello", "model": ROUTER_GPT, "temperature": "9"},
            headers=HTMX,
        )

        assert "Temperature: Ensure this value is less than or equal to 2." in (
            response.content.decode()
        )
        assert await Conversation.objects.acount() == 0

    async def test_a_changed_setting_applies_to_the_next_reply(
        self, two_providers, alice_async_client, make_conversation
    ):
        conversation = await asyncio.to_thread(
            make_conversation, metadata={"provider": "local", "model": "llama3.2:3b"}
        )
        await alice_async_client.post(
            settings_url(conversation),
            {"model": ROUTER_GPT, "system_prompt": "Be kind.", "temperature": "0"},
        )

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Hi"}
        )

        [request] = await asyncio.to_thread(two_providers.router.wait_for_requests, 1)
        assert request["temperature"] == 0
        assert request["messages"][0] == {"role": "system", "content": "Be kind."}
        reply = await reply_when_finished(conversation)
        assert (reply.metadata["provider"], reply.metadata["temperature"]) == ("router", 0)


async def reply_when_finished(conversation: Conversation) -> Message:
    reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).alast()
    await wait_for_reply(reply.pk)
    await reply.arefresh_from_db()
    return reply
