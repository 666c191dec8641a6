"""Exports: a conversation as Markdown or JSON, and all of a user's data as one JSON file,
each a download that matches what the database holds, and only ever the user's own."""

import json
from datetime import UTC, timedelta
from urllib.parse import urlparse

import pytest
from allauth.account.models import EmailAddress
from asgiref.sync import async_to_sync
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations.models import Conversation, Message, ShareLink

pytestmark = pytest.mark.django_db


def body(response: HttpResponse) -> bytes:
    """The whole body; the full export streams from an async generator, as daphne reads it."""
    if not response.streaming:
        return response.content

    async def read() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()


def download_name(response: HttpResponse) -> str:
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    return disposition.split('filename="', 1)[1].rstrip('"')


@pytest.fixture
def regenerated(make_conversation) -> Conversation:
    """Alice's conversation whose reply was regenerated once, with the model's report."""
    conversation = make_conversation(
        title="Rust vs Go: a plan / notes",
        history=[("user", "Which one for a CLI?"), ("assistant", "Go, **probably**.")],
    )
    first = conversation.messages.get(role="assistant")
    second = conversation.messages.create(
        role=Message.Role.ASSISTANT,
        content="Rust:\n\n```rust\nfn main() {}\n```",
        created_at=first.created_at + timedelta(milliseconds=5),
        metadata={
            "model": "gpt-test",
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
            "finish_reason": "stop",
            "timings": {"total_seconds": 0.5, "first_token_seconds": 0.1},
        },
    )
    first.superseded_by = second
    first.save(update_fields=["superseded_by"])
    return conversation


class TestConversationMarkdown:
    def test_it_has_the_title_then_each_current_message_with_author_and_time(
        self, alice_client, regenerated
    ) -> None:
        response = alice_client.get(reverse("conversation_export_markdown", args=[regenerated.pk]))

        assert response.status_code == 200
        assert response["Content-Type"] == "text/markdown; charset=utf-8"
        assert (
            download_name(response)
            == f"chatsite-rust-vs-go-a-plan-notes-{regenerated.pk.hex[:8]}.md"
        )
        question = regenerated.messages.get(role="user")
        reply = regenerated.messages.get(superseded_by__isnull=True, role="assistant")
        stamp = "%Y-%m-%d %H:%M UTC"
        assert response.content.decode() == "\n".join(
            [
                "# Rust vs Go: a plan / notes",
                "",
                f"## You · {question.created_at.astimezone(UTC).strftime(stamp)}",
                "",
                "Which one for a CLI?",
                "",
                f"## Assistant (gpt-test) · {reply.created_at.astimezone(UTC).strftime(stamp)}",
                "",
                "Rust:\n\n```rust\nfn main() {}\n```",
                "",
            ]
        )
        assert "Go, **probably**." not in response.content.decode()  # an earlier version

    def test_a_stopped_reply_says_so(self, alice_client, make_conversation) -> None:
        conversation = make_conversation(history=[("user", "Count")])
        conversation.messages.create(role="assistant", content="1, 2", status="stopped")

        response = alice_client.get(reverse("conversation_export_markdown", args=[conversation.pk]))

        assert response.content.decode().endswith("1, 2\n\n*Stopped*\n")


class TestConversationJson:
    def test_it_holds_the_conversation_and_every_message_with_its_metadata(
        self, alice_client, regenerated
    ) -> None:
        response = alice_client.get(reverse("conversation_export_json", args=[regenerated.pk]))

        assert response.status_code == 200
        assert response["Content-Type"] == "application/json; charset=utf-8"
        assert download_name(response).endswith(f"-{regenerated.pk.hex[:8]}.json")
        data = json.loads(response.content)
        assert data["format"] == "chatsite-export"
        exported = data["conversation"]
        assert exported["id"] == str(regenerated.pk)
        assert exported["title"] == regenerated.title
        assert exported["created_at"] == regenerated.created_at.isoformat()
        assert "owner_id" not in exported
        stored = list(regenerated.messages.order_by("created_at"))
        assert [m["id"] for m in exported["messages"]] == [str(m.pk) for m in stored]
        for shown, message in zip(exported["messages"], stored, strict=True):
            assert shown["role"] == message.role
            assert shown["content"] == message.content
            assert shown["status"] == message.status
            assert shown["metadata"] == message.metadata
            assert shown["current"] == (message.superseded_by_id is None)
            assert shown["superseded_by_id"] == (
                str(message.superseded_by_id) if message.superseded_by_id else None
            )
        assert exported["messages"][2]["metadata"]["usage"]["total_tokens"] == 16


@pytest.fixture
def alice_with_history(alice, make_conversation, regenerated) -> list[Conversation]:
    EmailAddress.objects.create(user=alice, email=alice.email, primary=True, verified=True)
    archived = make_conversation(
        title="Old stuff", metadata={"archived": True}, history=[("user", "Remember this")]
    )
    ShareLink.objects.create(conversation=regenerated)
    return [regenerated, archived]


class TestEverything:
    def test_it_holds_the_account_without_secrets_and_every_conversation_and_version(
        self, alice, alice_client, alice_with_history, make_conversation, bob
    ) -> None:
        make_conversation(owner=bob, title="Bob's secret", history=[("user", "Bob's words")])

        response = alice_client.get(reverse("export_all"))

        assert response.status_code == 200
        assert response.streaming
        assert response["Content-Type"] == "application/json; charset=utf-8"
        assert download_name(response).startswith("chatsite-export-")
        raw = body(response).decode()
        data = json.loads(raw)
        account = data["account"]
        assert account["email"] == alice.email
        assert account["id"] == alice.pk
        assert "password" not in account
        assert alice.password not in raw
        # The account's own settings are the user's data too.
        assert account["default_system_prompt"] == alice.default_system_prompt
        assert "daily_token_quota" in account
        assert account["email_addresses"] == [
            {"email": alice.email, "verified": True, "primary": True}
        ]
        exported = {c["id"]: c for c in data["conversations"]}
        assert set(exported) == {str(c.pk) for c in alice.conversations.all()}
        for conversation in alice.conversations.all():
            messages = exported[str(conversation.pk)]["messages"]
            stored = list(conversation.messages.order_by("created_at", "pk"))
            assert [(m["id"], m["content"], m["current"]) for m in messages] == [
                (str(m.pk), m.content, m.superseded_by_id is None) for m in stored
            ]
        assert any(not m["current"] for c in exported.values() for m in c["messages"])
        assert [c["metadata"] for c in exported.values() if c["title"] == "Old stuff"] == [
            {"archived": True}
        ]
        (share,) = data["share_links"]
        assert "token" not in share
        assert share["conversation_id"] == str(alice_with_history[0].pk)
        assert "Bob" not in raw

    def test_its_query_count_does_not_grow_with_the_conversations(
        self, alice_client, make_conversation
    ) -> None:
        def queries() -> int:
            with CaptureQueriesContext(connection) as captured:
                body(alice_client.get(reverse("export_all")))
            return len(captured)

        make_conversation(history=[("user", "one"), ("assistant", "two")])
        few = queries()
        for n in range(20):
            make_conversation(history=[("user", f"q{n}"), ("assistant", f"a{n}")])
        many = queries()

        assert many == few
        assert few <= 8

    def test_a_user_with_nothing_gets_valid_json(self, bob_client, bob) -> None:
        data = json.loads(body(bob_client.get(reverse("export_all"))))

        assert data["conversations"] == []
        assert data["account"]["email"] == bob.email


@pytest.mark.parametrize("route", ["conversation_export_markdown", "conversation_export_json"])
def test_another_users_conversation_is_not_found(route, bob_client, regenerated) -> None:
    response = bob_client.get(reverse(route, args=[regenerated.pk]))

    assert response.status_code == 404
    assert "Rust" not in response.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        lambda c: reverse("conversation_export_markdown", args=[c.pk]),
        lambda c: reverse("conversation_export_json", args=[c.pk]),
        lambda c: reverse("export_all"),
    ],
)
def test_anonymous_visitors_are_sent_to_sign_in(url, client, regenerated) -> None:
    response = client.get(url(regenerated))

    assert response.status_code == 302
    assert urlparse(response["Location"]).path == reverse("account_login")


def test_the_pages_link_to_the_exports(alice_client, regenerated) -> None:
    page = alice_client.get(regenerated.get_absolute_url()).content.decode()

    assert f'href="{reverse("conversation_export_markdown", args=[regenerated.pk])}"' in page
    assert f'href="{reverse("conversation_export_json", args=[regenerated.pk])}"' in page
    assert f'href="{reverse("export_all")}"' in page
