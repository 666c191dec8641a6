"""Several providers at once: configured in a file, their models listed (and cached) in the
picker, each conversation's request sent to the provider and model it chose."""

import asyncio
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.urls import reverse

from accounts.models import User
from chatsite import startup
from conversations.llm import providers
from conversations.llm.providers import choice_value
from conversations.models import Conversation, Message
from tests.support.fake_openai import Reply
from tests.support.live import free_port
from tests.support.providers import LOCAL_MODELS, ROUTER_KEY, ROUTER_MODELS, picker, selected
from tests.support.replies import wait_for_reply
from tests.support.visitors import PASSWORD
from tests.support.xss import parse

HTMX = {"HX-Request": "true"}


@pytest.mark.django_db
class TestThePicker:
    def test_it_lists_each_providers_models_under_its_label(self, two_providers, alice_client):
        page = alice_client.get(reverse("home")).content.decode()

        assert picker(page) == {"Local Ollama": list(LOCAL_MODELS), "Router": list(ROUTER_MODELS)}
        # New chats start on the first provider's default model.
        assert selected(page) == choice_value("local", "llama3.2:3b")

    def test_the_openai_variables_stay_the_default_provider_beside_the_file(
        self, two_providers, fake_openai, alice_client, settings
    ):
        settings.CHAT_DEFAULT_MODEL = "gpt-4o"

        page = alice_client.get(reverse("home")).content.decode()

        groups = picker(page)
        labels = list(groups)
        assert labels == [fake_openai.base_url.split("/")[2], "Local Ollama", "Router"]
        assert "gpt-4o" in groups[labels[0]]  # the default provider, labelled by its host
        assert selected(page) == choice_value("default", "gpt-4o")

    def test_a_second_page_load_does_not_ask_the_providers_again(
        self, two_providers, alice_client, conversation
    ):
        alice_client.get(reverse("home"))
        page = alice_client.get(conversation.get_absolute_url()).content.decode()

        assert two_providers.local.models_requests == 1
        assert two_providers.router.models_requests == 1
        assert picker(page)["Router"] == list(ROUTER_MODELS)

    def test_a_provider_whose_listing_fails_offers_its_manual_list(
        self, two_providers, alice_client
    ):
        two_providers.local.models_status = 500

        first = alice_client.get(reverse("home"))
        second = alice_client.get(reverse("home"))

        assert first.status_code == second.status_code == 200
        groups = picker(first.content.decode())
        # The manual list, and the provider's default model, which is always offered.
        assert groups["Local Ollama"] == ["llama3.2:3b", "manual-local-model"]
        assert groups["Router"] == list(ROUTER_MODELS)
        # The failure is remembered for a while too: no request per page load.
        assert two_providers.local.models_requests == 1

    def test_a_provider_that_is_down_offers_its_manual_list(self, two_providers, alice_client):
        two_providers.router.stop()

        response = alice_client.get(reverse("home"))

        assert response.status_code == 200
        # The manual list, and the provider's default model, which is always offered.
        assert picker(response.content.decode())["Router"] == [
            "openai/gpt-4o",
            "manual-router-model",
        ]

    def test_a_wrong_key_is_a_failed_listing_too(self, two_providers, alice_client, monkeypatch):
        monkeypatch.setenv("ROUTER_TEST_KEY", "sk-wrong")

        page = alice_client.get(reverse("home")).content.decode()

        assert picker(page)["Router"] == ["openai/gpt-4o", "manual-router-model"]

    def test_without_discovery_only_the_manual_list_is_offered(self, two_providers, alice_client):
        text = two_providers.file.read_text().replace(
            'models = ["manual-router-model"]', 'models = ["manual-router-model"]\ndiscover = false'
        )
        two_providers.file.write_text(text)

        page = alice_client.get(reverse("home")).content.decode()

        assert picker(page)["Router"] == ["openai/gpt-4o", "manual-router-model"]
        assert two_providers.router.models_requests == 0

    def test_with_nothing_configured_the_offline_model_is_the_only_choice(self, alice_client):
        page = alice_client.get(reverse("home")).content.decode()

        assert picker(page) == {"Offline demo": ["offline-demo"]}
        assert "Offline demo model" in parse(page).by_id("model-badge").text()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestTheChosenProviderAnswers:
    async def test_the_request_goes_to_the_chosen_provider_with_the_chosen_settings(
        self, two_providers, alice_async_client
    ):
        two_providers.router.script(Reply(text="Hello from the router."))
        model = "meta-llama/llama-3.1-8b-instruct"

        response = await alice_async_client.post(
            reverse("conversation_start"),
            {
                "text": "Hi there",
                "model": choice_value("router", model),
                "system_prompt": "Answer like a pirate.",
                "temperature": "0.3",
            },
            headers=HTMX,
        )

        assert response.status_code == 200
        conversation = await Conversation.objects.aget()
        reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).aget()
        await wait_for_reply(reply.pk)
        [request] = await asyncio.to_thread(two_providers.router.wait_for_requests, 1)
        assert request["model"] == model
        assert request["temperature"] == 0.3
        assert request["messages"] == [
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": "Hi there"},
        ]
        assert two_providers.router.request_headers[0]["authorization"] == f"Bearer {ROUTER_KEY}"
        assert two_providers.local.requests == []
        await reply.arefresh_from_db()
        assert reply.content == "Hello from the router."
        assert reply.metadata["model"] == model
        assert reply.metadata["provider"] == "router"
        assert reply.metadata["provider_label"] == "Router"
        page = (await alice_async_client.get(conversation.get_absolute_url())).content.decode()
        shown = parse(page).by_id(f"message-{reply.pk}")
        assert [span.text() for span in shown.all(class_name="message-model")] == [
            f"{model} · Router"
        ]

    async def test_a_blank_temperature_leaves_the_providers_default(
        self, two_providers, alice_async_client
    ):
        await alice_async_client.post(
            reverse("conversation_start"),
            {"text": "Hi", "model": choice_value("local", "qwen2.5:7b-instruct")},
            headers=HTMX,
        )

        [request] = await asyncio.to_thread(two_providers.local.wait_for_requests, 1)
        assert request["model"] == "qwen2.5:7b-instruct"
        assert "temperature" not in request
        reply = await Message.objects.filter(role=Message.Role.ASSISTANT).aget()
        await wait_for_reply(reply.pk)

    async def test_a_provider_removed_from_the_configuration_is_a_clear_error(
        self, two_providers, alice_async_client, make_conversation
    ):
        conversation = await asyncio.to_thread(
            make_conversation, metadata={"provider": "retired", "model": "old-model"}
        )

        await alice_async_client.post(
            reverse("message_send", args=[conversation.pk]), {"text": "Still there?"}
        )

        reply = await conversation.messages.filter(role=Message.Role.ASSISTANT).aget()
        await wait_for_reply(reply.pk)
        await reply.arefresh_from_db()
        assert reply.status == Message.Status.ERROR
        assert "“retired” chosen for this conversation is no longer configured" in (
            reply.error_text
        )
        assert two_providers.local.requests == two_providers.router.requests == []
        page = (await alice_async_client.get(conversation.get_absolute_url())).content.decode()
        assert "no longer configured" in parse(page).by_id(f"message-{reply.pk}").text()


class TestTheProvidersFile:
    def test_it_reads_every_field(self) -> None:
        [local, offline] = providers.parse_providers(
            {
                "providers": [
                    {
                        "slug": "ollama",
                        "label": "Ollama",
                        "base_url": "http://127.0.0.1:11434/v1",
                        "models": ["llama3.2:3b"],
                        "context_window": 4096,
                        "context_windows": {"qwen2.5:32k": 32768},
                        "discover": False,
                    },
                    {"offline": True, "context_window": 2048},
                ]
            }
        )

        assert (local.slug, local.label, local.default_model) == ("ollama", "Ollama", "llama3.2:3b")
        assert local.context_window_for("qwen2.5:32k") == 32768
        assert local.context_window_for("llama3.2:3b") == 4096
        assert not local.discover
        assert (offline.slug, offline.offline, offline.models) == (
            "offline",
            True,
            ("offline-demo",),
        )
        assert offline.context_window_for("offline-demo") == 2048

    @pytest.mark.parametrize(
        ("entry", "complaint"),
        [
            ({"slug": "x", "base_url": "http://h/v1", "models": ["m"], "api_key": "sk"}, "key"),
            ({"slug": "Bad Slug", "base_url": "http://h/v1", "models": ["m"]}, "slug"),
            ({"slug": "default", "base_url": "http://h/v1", "models": ["m"]}, "default"),
            ({"slug": "x", "base_url": "ftp://h", "models": ["m"]}, "base_url"),
            ({"slug": "x", "base_url": "http://h/v1"}, "default_model"),
            (
                {"slug": "x", "base_url": "http://h/v1", "models": ["m"], "context_window": 0},
                "tokens",
            ),
        ],
    )
    def test_a_mistake_is_reported_plainly(self, entry: dict, complaint: str) -> None:
        with pytest.raises(ImproperlyConfigured, match=complaint):
            providers.parse_providers({"providers": [entry]})

    def test_a_file_that_does_not_parse_is_reported_with_its_path(self, settings, tmp_path):
        broken = tmp_path / "providers.toml"
        broken.write_text("[[providers]\nslug = ")
        settings.CHAT_PROVIDERS_FILE = str(broken)

        with pytest.raises(ImproperlyConfigured, match=str(broken)):
            providers.configured()

    def test_manage_py_check_reports_a_mistake_before_any_page_fails(self, settings, tmp_path):
        file = tmp_path / "providers.toml"
        file.write_text('[[providers]]\nslug = "x"\nbase_url = "http://h/v1"\napi_key = "sk"\n')
        settings.CHAT_PROVIDERS_FILE = str(file)

        with pytest.raises(SystemCheckError, match="never put a key in the file"):
            call_command("check")


class TestMistakesInTheProvidersFile:
    def test_an_unknown_key_is_an_error_with_its_line_and_the_likely_key(
        self, two_providers
    ) -> None:
        text = two_providers.file.read_text()
        two_providers.file.write_text(
            text.replace('default_model = "openai', 'defualt_model = "openai')
        )

        with pytest.raises(ImproperlyConfigured) as raised:
            providers.configured()

        assert str(raised.value) == (
            f"CHAT_PROVIDERS_FILE {two_providers.file}, line 15: unknown key `defualt_model` "
            "(did you mean `default_model`?)"
        )

    def test_an_unknown_table_is_an_error(self, two_providers) -> None:
        two_providers.file.write_text(two_providers.file.read_text() + '\n[provider]\nslug = "x"\n')

        with pytest.raises(ImproperlyConfigured, match=r"unknown key `provider` \(did you mean"):
            providers.configured()

    def test_a_default_provider_that_is_not_configured_is_an_error(
        self, two_providers, settings
    ) -> None:
        settings.CHAT_DEFAULT_PROVIDER = "ollama"

        with pytest.raises(ImproperlyConfigured) as raised:
            providers.configured()
        with pytest.raises(SystemCheckError, match="CHAT_DEFAULT_PROVIDER is 'ollama'"):
            call_command("check")

        assert str(raised.value) == (
            "CHAT_DEFAULT_PROVIDER is 'ollama', but no provider has that slug; the configured "
            "ones are: local, router."
        )

    @pytest.mark.live
    def test_a_server_refuses_to_start_with_the_files_path_and_line(self, tmp_path) -> None:
        broken = tmp_path / "providers.toml"
        broken.write_text('[[providers]]\nslug = "local"\nbase_url = \n')
        environment = {
            "PATH": os.environ["PATH"],
            "SECRET_KEY": "x",
            "CHAT_PROVIDERS_FILE": str(broken),
        }

        started = subprocess.run(
            [sys.executable, "-m", "daphne", "-p", str(free_port()), "chatsite.asgi:application"],
            cwd=settings.BASE_DIR,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert started.returncode == 1
        assert "Traceback" not in started.stderr
        assert started.stderr.splitlines()[-1] == (
            f"CHAT_PROVIDERS_FILE {broken}: Invalid value (at line 3, column 12)"
        )


@pytest.mark.django_db
class TestAFileBrokenWhileTheSiteRuns:
    @pytest.fixture
    def staff_client(self, db) -> Client:
        client = Client()
        client.force_login(User.objects.create_superuser("staff@example.com", PASSWORD))
        return client

    def test_the_site_keeps_its_last_good_providers_and_tells_staff(
        self, two_providers, alice_client, staff_client, caplog
    ) -> None:
        good = two_providers.file.read_text()
        before = picker(alice_client.get(reverse("home")).content.decode())
        two_providers.file.write_text(good.replace('label = "Router"', 'label = "Router'))

        pages = {
            "chat": alice_client.get(reverse("home")),
            "sign in": Client().get(reverse("account_login")),
            "API": alice_client.get("/api/v1/conversations"),
            "staff's chat": staff_client.get(reverse("home")),
            "admin": staff_client.get(reverse("admin:conversations_conversation_changelist")),
        }

        assert {name: page.status_code for name, page in pages.items()} == dict.fromkeys(pages, 200)
        assert picker(pages["chat"].content.decode()) == before
        assert "providers-problem" not in pages["chat"].content.decode()
        mistake = f"CHAT_PROVIDERS_FILE {two_providers.file}: Illegal character"
        for shown in ("staff's chat", "admin"):
            banner = parse(pages[shown].content.decode()).by_id("providers-problem").text()
            assert "still uses its last good version" in banner
            assert mistake in banner
            assert "(at line 11, column 16)" in banner
        logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(logged) == 1
        assert logged[0].startswith(mistake)

        two_providers.file.write_text(good.replace('label = "Router"', 'label = "Router 2"'))
        fixed = staff_client.get(reverse("home")).content.decode()

        assert "providers-problem" not in fixed
        assert "Router 2" in picker(fixed)

    def test_a_file_broken_before_the_first_page_keeps_the_version_the_server_started_with(
        self, two_providers, staff_client
    ) -> None:
        startup.check_configuration()  # as daphne does when it starts (chatsite/asgi.py)
        two_providers.file.write_text("[[providers]\n")

        page = staff_client.get(reverse("home"))

        assert page.status_code == 200
        assert picker(page.content.decode()) == {
            "Local Ollama": list(LOCAL_MODELS),
            "Router": list(ROUTER_MODELS),
        }
        banner = parse(page.content.decode()).by_id("providers-problem").text()
        assert f"CHAT_PROVIDERS_FILE {two_providers.file}: " in banner
