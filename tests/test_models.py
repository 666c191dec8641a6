"""Users, conversations and messages as stored in the database."""

from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from accounts.models import User
from conversations.models import Conversation, Message

PASSWORD = "a long and unguessable passphrase"


@pytest.mark.django_db
class TestUsers:
    def test_a_user_signs_in_with_an_email_address_and_no_username(self):
        user = User.objects.create_user("Carol@Example.COM", PASSWORD)

        assert User.USERNAME_FIELD == "email"
        assert "username" not in {field.name for field in User._meta.get_fields()}
        assert user.email == "Carol@example.com"
        assert str(user) == "Carol@example.com"
        assert user.check_password(PASSWORD)
        assert user.password != PASSWORD
        assert not user.is_staff
        assert not user.is_superuser

    def test_an_email_address_is_required(self):
        with pytest.raises(ValueError, match="email"):
            User.objects.create_user("", PASSWORD)

    def test_two_users_cannot_share_an_email_address(self, alice):
        with pytest.raises(IntegrityError):
            User.objects.create_user(alice.email, "another password")

    def test_create_superuser_makes_an_administrator(self):
        admin = User.objects.create_superuser("root@example.com", PASSWORD)

        assert admin.is_staff
        assert admin.is_superuser
        assert admin.check_password(PASSWORD)

    def test_create_superuser_cannot_be_talked_out_of_admin_rights(self):
        admin = User.objects.create_superuser("root@example.com", PASSWORD, is_staff=False)

        assert admin.is_staff
        assert admin.is_superuser


@pytest.mark.django_db
class TestConversations:
    def test_a_new_conversation_has_sensible_defaults(self, alice, settings):
        settings.CHAT_SYSTEM_PROMPT = "Be brief."

        conversation = Conversation.objects.create(owner=alice)

        assert conversation.title == ""
        assert conversation.display_title == "New chat"
        assert str(conversation) == "New chat"
        assert conversation.metadata == {}
        assert conversation.system_prompt == "Be brief."
        assert conversation.get_absolute_url() == f"/c/{conversation.pk}/"

    def test_a_titled_conversation_displays_its_title(self, make_conversation):
        conversation = make_conversation(title="Trip planning")

        assert conversation.display_title == "Trip planning"
        assert str(conversation) == "Trip planning"

    def test_conversation_metadata_overrides_the_system_prompt(self, make_conversation, settings):
        settings.CHAT_SYSTEM_PROMPT = "Be brief."
        conversation = make_conversation(
            metadata={"model": "llama3", "system_prompt": "Answer as a pirate."}
        )

        assert conversation.system_prompt == "Answer as a pirate."

    def test_conversations_are_listed_most_recently_active_first(self, make_conversation):
        now = timezone.now()
        older = make_conversation(title="older", updated_at=now - timedelta(days=2))
        newest = make_conversation(title="newest", updated_at=now)
        middle = make_conversation(title="middle", updated_at=now - timedelta(days=1))

        assert list(Conversation.objects.all()) == [newest, middle, older]

    def test_deleting_a_user_deletes_their_conversations_and_messages(self, alice, conversation):
        alice.delete()

        assert not Conversation.objects.exists()
        assert not Message.objects.exists()


@pytest.mark.django_db
class TestMessages:
    def test_a_conversations_messages_come_in_the_order_they_were_written(self, alice):
        conversation = Conversation.objects.create(owner=alice)
        start = timezone.now()
        second = Message.objects.create(
            conversation=conversation, role="assistant", content="Hi!", created_at=start
        )
        third = Message.objects.create(
            conversation=conversation,
            role="user",
            content="How are you?",
            created_at=start + timedelta(seconds=1),
        )
        first = Message.objects.create(
            conversation=conversation,
            role="user",
            content="Hello",
            created_at=start - timedelta(seconds=1),
        )

        assert list(conversation.messages.all()) == [first, second, third]

    def test_a_new_message_is_complete_and_empty_by_default(self, conversation):
        message = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT)

        assert message.status == Message.Status.COMPLETE
        assert not message.is_streaming
        assert message.content == ""
        assert message.metadata == {}
        assert message.usage == {}
        assert message.error_text == ""

    def test_a_reply_exposes_what_the_model_reported(self, conversation):
        usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        reply = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.ERROR,
            content="Partial",
            metadata={"usage": usage, "error": "The model provider had an internal error."},
        )

        assert reply.usage == usage
        assert reply.error_text == "The model provider had an internal error."
        assert str(reply) == "assistant: Partial"
