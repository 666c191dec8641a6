"""Share links: the owner makes a read-only link to a conversation as it stands and can revoke
it; anyone holding it reads that snapshot, signed out, and sees nothing else."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation, Message, ShareLink
from tests.support.xss import parse

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def shared(conversation: Conversation) -> ShareLink:
    return ShareLink.snapshot_of(conversation)


def create_link(client: Client, conversation: Conversation):
    return client.post(reverse("share_create", args=[conversation.pk]), headers=HTMX)


def shown_texts(client: Client, share: ShareLink) -> list[str]:
    page = parse(client.get(share.get_absolute_url()).content.decode())
    return [body.text().strip() for body in page.all("div", "message-body")]


def shown_title(client: Client, share: ShareLink) -> tuple[str, str]:
    page = parse(client.get(share.get_absolute_url()).content.decode())
    return page.by_id("conversation-title").text(), page.all("title")[0].text()


class TestCreating:
    def test_the_owner_gets_an_unguessable_link_shown_with_copy_and_revoke(
        self, alice_client, conversation
    ) -> None:
        response = create_link(alice_client, conversation)

        assert response.status_code == 200
        share = ShareLink.objects.get(conversation=conversation)
        assert len(share.token) >= 43  # 32 random bytes
        panel = parse(response.content.decode()).by_id("share-panel")
        url = panel.by_id("share-url").attrs["value"]
        assert url == f"http://testserver/s/{share.token}/"
        assert panel.all("button", "copy-button")[0].attrs["data-copy-from"] == "share-url"
        (revoke,) = panel.all("form")
        assert revoke.attrs["hx-post"] == reverse("share_revoke", args=[conversation.pk])

    def test_creating_again_keeps_the_same_link(self, alice_client, conversation) -> None:
        create_link(alice_client, conversation)
        create_link(alice_client, conversation)

        assert conversation.share_links.count() == 1

    def test_tokens_differ_between_conversations(self, alice_client, make_conversation) -> None:
        first, second = make_conversation(), make_conversation()
        create_link(alice_client, first)
        create_link(alice_client, second)

        assert first.share_links.get().token != second.share_links.get().token

    def test_the_conversation_page_offers_sharing_and_shows_the_active_link(
        self, alice_client, conversation, shared
    ) -> None:
        page = parse(alice_client.get(conversation.get_absolute_url()).content.decode())

        assert page.by_id("share-url").attrs["value"].endswith(shared.get_absolute_url())

    def test_without_htmx_the_owner_is_sent_back_to_the_conversation(
        self, alice_client, conversation
    ) -> None:
        response = alice_client.post(reverse("share_create", args=[conversation.pk]))

        assert response.status_code == 302
        assert response["Location"] == conversation.get_absolute_url()
        assert conversation.share_links.count() == 1

    @pytest.mark.parametrize("route", ["share_create", "share_revoke"])
    def test_another_user_can_neither_create_nor_revoke(
        self, route, bob_client, conversation, shared
    ) -> None:
        response = bob_client.post(reverse(route, args=[conversation.pk]), headers=HTMX)

        assert response.status_code == 404
        shared.refresh_from_db()
        assert shared.revoked_at is None
        assert conversation.share_links.count() == 1

    def test_a_get_changes_nothing(self, alice_client, conversation) -> None:
        response = alice_client.get(reverse("share_create", args=[conversation.pk]))

        assert response.status_code == 405
        assert not conversation.share_links.exists()


class TestThePublicPage:
    def test_it_shows_the_conversation_to_anyone_signed_out(
        self, client, make_conversation, alice
    ) -> None:
        conversation = make_conversation(
            title="Sourdough",
            history=[
                ("user", "How do I *feed* a starter?"),
                ("assistant", "Like this:\n\n```python\nflour = water = 50\n```"),
            ],
        )
        make_conversation(title="Alice's other conversation", history=[("user", "private")])
        share = ShareLink.snapshot_of(conversation)

        response = client.get(share.get_absolute_url())

        assert response.status_code == 200
        content = response.content.decode()
        page = parse(content)
        assert page.by_id("conversation-title").text() == "Sourdough"
        bodies = page.all("div", "message-body")
        assert bodies[0].all("em")[0].text() == "feed"
        (code,) = bodies[1].all("code")
        assert code.text() == "flour = water = 50\n"
        assert {"n", "o", "mi"} <= {name for span in code.all("span") for name in span.classes()}
        assert page.all("button", "copy-code")
        assert [b.attrs["data-copy-text"] for b in page.all("button", "copy-message")] == [
            "How do I *feed* a starter?",
            "Like this:\n\n```python\nflour = water = 50\n```",
        ]
        for absent in (alice.email, "Alice's other conversation", "private"):
            assert absent not in content
        # No sidebar, composer, websocket or any control beyond the copy buttons.
        assert not page.all("form")
        assert not page.all("textarea")
        assert "ws-connect" not in content
        assert {b.attrs["class"] for b in page.all("button")} <= {
            "copy-code",
            "copy-button copy-message",
        }

    def test_it_is_not_indexed_and_sends_no_referrer(self, client, shared) -> None:
        response = client.get(shared.get_absolute_url())

        assert response["X-Robots-Tag"] == "noindex, nofollow"
        assert response["Referrer-Policy"] == "no-referrer"
        metas = {
            m.attrs.get("name"): m.attrs.get("content")
            for m in parse(response.content.decode()).all("meta")
        }
        assert metas["robots"] == "noindex, nofollow"
        assert metas["referrer"] == "no-referrer"

    def test_a_revoked_link_is_not_found(self, alice_client, client, conversation, shared) -> None:
        response = alice_client.post(reverse("share_revoke", args=[conversation.pk]), headers=HTMX)

        assert response.status_code == 200
        assert parse(response.content.decode()).by_id("share-panel").all("form")[0].attrs[
            "hx-post"
        ] == reverse("share_create", args=[conversation.pk])
        assert client.get(shared.get_absolute_url()).status_code == 404
        assert alice_client.get(shared.get_absolute_url()).status_code == 404

    def test_sharing_again_after_revoking_makes_a_new_link(
        self, alice_client, client, conversation, shared
    ) -> None:
        alice_client.post(reverse("share_revoke", args=[conversation.pk]))
        create_link(alice_client, conversation)

        new = conversation.share_links.get(revoked_at__isnull=True)
        assert new.token != shared.token
        assert client.get(new.get_absolute_url()).status_code == 200
        assert client.get(shared.get_absolute_url()).status_code == 404

    @pytest.mark.parametrize("token", ["no-such-token", "x" * 43, "a"])
    def test_an_unknown_token_is_not_found(self, client, shared, token) -> None:
        assert client.get(reverse("share", args=[token])).status_code == 404

    def test_a_deleted_conversations_links_die_with_it(self, client, conversation, shared) -> None:
        url = shared.get_absolute_url()
        conversation.delete()

        assert client.get(url).status_code == 404
        assert not ShareLink.objects.exists()


class TestTheSnapshot:
    """The link shows the conversation as it was when shared: later messages, regenerations
    and edits stay with the owner until they share again."""

    def test_messages_added_later_are_not_shown(self, client, conversation) -> None:
        share = ShareLink.snapshot_of(conversation)
        conversation.messages.create(
            role="user",
            content="A later question",
            created_at=share.created_at + timedelta(seconds=1),
        )

        page = client.get(share.get_absolute_url()).content.decode()

        assert "Try <strong>Lisbon</strong>." in page
        assert "A later question" not in page

    def test_a_reply_regenerated_later_shows_as_it_was(self, client, conversation) -> None:
        share = ShareLink.snapshot_of(conversation)
        old = conversation.messages.get(role="assistant")
        for n in (1, 2):  # regenerated twice: the earlier versions all point at the newest
            new = conversation.messages.create(
                role="assistant",
                content=f"Version {n + 1}",
                created_at=share.created_at + timedelta(seconds=n),
            )
            Message.objects.filter(superseded_by=old).update(superseded_by=new)
            Message.objects.filter(pk=old.pk).update(superseded_by=new)
            old = new

        page = parse(client.get(share.get_absolute_url()).content.decode())

        texts = [body.text().strip() for body in page.all("div", "message-body")]
        assert texts == ["Where should I go in May?", "Try Lisbon."]

    def test_a_rename_later_is_not_shown(self, alice_client, client, conversation) -> None:
        create_link(alice_client, conversation)
        alice_client.post(
            reverse("conversation_rename", args=[conversation.pk]), {"title": "Secret new name"}
        )
        conversation.refresh_from_db()

        share = conversation.share_links.get()
        assert conversation.title == "Secret new name"
        assert shown_title(client, share) == ("Trip planning", "Trip planning · shared on chatsite")

    def test_an_untitled_conversation_stays_untitled_when_it_gets_a_title(
        self, client, make_conversation
    ) -> None:
        conversation = make_conversation(history=[("user", "Hello")])
        share = ShareLink.snapshot_of(conversation)
        Conversation.objects.filter(pk=conversation.pk).update(title="Named after sharing")

        assert shown_title(client, share)[0] == "New chat"

    def test_text_written_to_a_message_after_sharing_never_appears(
        self, client, conversation
    ) -> None:
        """Whatever writes to a message later (a generator that lost its reply, an admin), the
        link shows a copy made when it was created."""
        share = ShareLink.snapshot_of(conversation)
        conversation.messages.filter(role="assistant").update(content="Try Lisbon. And more")

        assert shown_texts(client, share) == ["Where should I go in May?", "Try Lisbon."]

    def test_an_earlier_version_replaced_before_sharing_is_not_shown(
        self, client, conversation
    ) -> None:
        old = conversation.messages.get(role="assistant")
        new = conversation.messages.create(
            role="assistant",
            content="Try Porto.",
            created_at=old.created_at + timedelta(milliseconds=5),
        )
        Message.objects.filter(pk=old.pk).update(superseded_by=new)
        share = ShareLink.snapshot_of(conversation)
        later = conversation.messages.create(
            role="assistant",
            content="Try Madrid.",
            created_at=share.created_at + timedelta(seconds=1),
        )
        Message.objects.filter(superseded_by=new).update(superseded_by=later)
        Message.objects.filter(pk=new.pk).update(superseded_by=later)

        page = parse(client.get(share.get_absolute_url()).content.decode())

        texts = [body.text().strip() for body in page.all("div", "message-body")]
        assert texts == ["Where should I go in May?", "Try Porto."]


class TestMidReply:
    """A link shows finished replies only: sharing waits for the reply being written."""

    @pytest.fixture
    def streaming(self, conversation: Conversation) -> Message:
        conversation.messages.create(role="user", content="And in June?")
        return conversation.messages.create(
            role="assistant", status=Message.Status.STREAMING, content="In June, the"
        )

    def test_sharing_while_a_reply_is_written_is_refused_with_the_reason(
        self, alice_client, conversation, streaming
    ) -> None:
        response = create_link(alice_client, conversation)

        assert response.status_code == 200
        panel = parse(response.content.decode()).by_id("share-panel")
        assert "A reply is still being written" in panel.by_id("share-refusal").text()
        (create,) = panel.all("form")
        assert create.attrs["hx-post"] == reverse("share_create", args=[conversation.pk])
        assert not conversation.share_links.exists()

    def test_once_the_reply_has_finished_the_link_shows_it_whole(
        self, alice_client, client, conversation, streaming
    ) -> None:
        create_link(alice_client, conversation)
        streaming.content, streaming.status = "In June, the Azores.", Message.Status.COMPLETE
        streaming.save(update_fields=["content", "status"])

        create_link(alice_client, conversation)

        share = conversation.share_links.get()
        assert shown_texts(client, share)[-2:] == ["And in June?", "In June, the Azores."]

    def test_a_reply_whose_process_died_does_not_hold_sharing_up(
        self, alice_client, client, conversation, streaming
    ) -> None:
        stale = timezone.now() - timedelta(seconds=settings.CHAT_STALE_SECONDS + 1)
        Message.objects.filter(pk=streaming.pk).update(updated_at=stale)

        create_link(alice_client, conversation)

        share = conversation.share_links.get()
        page = parse(client.get(share.get_absolute_url()).content.decode())
        assert page.by_id(f"message-{streaming.pk}").all("p", "message-status")[0].text() == (
            "Interrupted"
        )

    def test_a_link_never_freezes_half_a_reply(self, client, conversation, streaming) -> None:
        """Even made without the page's check (a race on a database without row locks)."""
        share = ShareLink.snapshot_of(conversation)
        streaming.content = "In June, the Azores."
        streaming.save(update_fields=["content"])

        assert "In June, the" not in "".join(shown_texts(client, share))

    def test_the_panel_says_a_link_is_a_snapshot(self, alice_client, conversation) -> None:
        offered = parse(alice_client.get(conversation.get_absolute_url()).content.decode()).by_id(
            "share-panel"
        )
        made = parse(create_link(alice_client, conversation).content.decode()).by_id("share-panel")

        for panel in (offered, made):
            assert "Later messages and renames are not shared" in panel.text()
        assert "Replies still being written are not shared" in offered.text()


class TestRevoking:
    def test_a_revoked_link_keeps_no_copy_of_the_conversation(
        self, alice_client, conversation, shared
    ) -> None:
        alice_client.post(reverse("share_revoke", args=[conversation.pk]), headers=HTMX)

        shared.refresh_from_db()
        assert shared.revoked_at is not None
        assert (shared.title, shared.snapshot) == ("", [])


BEFORE_SNAPSHOTS = [("conversations", "0005_usage_ledger")]
WITH_SNAPSHOTS = [("conversations", "0006_share_snapshot")]


@pytest.mark.django_db(transaction=True)
def test_links_made_before_snapshots_keep_what_they_showed_then(alice) -> None:
    """Migrating freezes each live link: the title as it is, the messages current when it was
    made, less a reply still being written. A revoked link gets no copy."""
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE_SNAPSHOTS)
    try:
        old = executor.loader.project_state(BEFORE_SNAPSHOTS).apps
        made = timezone.now()
        conversation = old.get_model("conversations", "Conversation").objects.create(
            owner_id=alice.pk, title="Trip"
        )
        messages = old.get_model("conversations", "Message").objects
        for n, (role, content, status) in enumerate(
            [
                ("user", "Where?", "complete"),
                ("assistant", "Porto.", "complete"),
                ("user", "And then?", "complete"),
                ("assistant", "Then", "streaming"),
            ]
        ):
            messages.create(
                conversation=conversation,
                role=role,
                content=content,
                status=status,
                created_at=made - timedelta(seconds=10 - n),
            )
        messages.create(
            conversation=conversation,
            role="user",
            content="Later",
            created_at=made + timedelta(seconds=1),
        )
        links = old.get_model("conversations", "ShareLink").objects
        live = links.create(conversation=conversation, created_at=made)
        revoked = links.create(conversation=conversation, created_at=made, revoked_at=made)

        MigrationExecutor(connection).migrate(WITH_SNAPSHOTS)
    finally:
        MigrationExecutor(connection).migrate(latest)

    live, revoked = ShareLink.objects.get(pk=live.pk), ShareLink.objects.get(pk=revoked.pk)
    assert live.title == "Trip"
    assert [(m["role"], m["content"], m["status"]) for m in live.snapshot] == [
        ("user", "Where?", "complete"),
        ("assistant", "Porto.", "complete"),
        ("user", "And then?", "complete"),
    ]
    assert (revoked.title, revoked.snapshot) == ("", [])
