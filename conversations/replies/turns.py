"""Storing a turn: the user's message and an empty reply, in one transaction that locks the
conversation (one reply at a time), keeps what an edit or a regeneration replaces as earlier
versions, reserves the reply's tokens (replies/quota.py) and reads what the model is sent."""

import uuid

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from conversations.llm import catalogue
from conversations.models import Conversation, Message
from conversations.replies import quota, sweeper

TITLE_LENGTH = 60


class ReplyInProgress(Exception):
    """The conversation already has a reply streaming: one at a time."""

    message = "Wait for the current reply to finish, or stop it, first."


def title_from(text: str) -> str:
    first_line = " ".join(text.split())
    if len(first_line) <= TITLE_LENGTH:
        return first_line
    return first_line[: TITLE_LENGTH - 1].rstrip() + "…"


class NothingToRegenerate(Exception):
    """The conversation has no reply to regenerate, or the message is not the last one."""


def _lock_idle(conversation: Conversation) -> Conversation:
    """Lock the conversation row; refuse if a reply is streaming (one reply at a time)."""
    locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
    if sweeper.reply_streaming(locked):
        raise ReplyInProgress
    return locked


def _new_reply(conversation: Conversation, created_at) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        created_at=created_at,
        metadata=_answered_by(conversation.metadata),
        lease=uuid.uuid4(),
    )


def _answered_by(settings_of_conversation: dict) -> dict:
    """What a new reply records of the model asked: provider, model and temperature."""
    choice = catalogue.for_conversation(settings_of_conversation)
    recorded = {
        "model": choice.model,
        "provider": choice.provider.slug,
        "provider_label": choice.provider.label,
    }
    if settings_of_conversation.get("temperature") is not None:
        recorded["temperature"] = settings_of_conversation["temperature"]
    return recorded


def _supersede(old: Message, new: Message) -> None:
    """Keep `old` as an earlier version of `new`, with the versions it already had."""
    Message.objects.filter(superseded_by=old).update(superseded_by=new)
    old.superseded_by = new
    old.save(update_fields=["superseded_by"])


def _touch(conversation: Conversation, locked: Conversation, now, text: str | None) -> None:
    fields = ["updated_at"]
    locked.updated_at = now
    if text and not locked.title:
        locked.title = title_from(text)
        fields.append("title")
    locked.save(update_fields=fields)
    conversation.title, conversation.updated_at = locked.title, locked.updated_at


@database_sync_to_async
def store_turn(
    conversation: Conversation, text: str, *, replacing: uuid.UUID | None
) -> tuple[Message, list[dict[str, str]]]:
    with transaction.atomic():
        locked = _lock_idle(conversation)
        current = locked.messages.filter(superseded_by__isnull=True).order_by("created_at")
        previous: list[Message] = []
        if replacing:
            last_user = current.filter(role=Message.Role.USER).last()
            if not last_user or last_user.pk != replacing:
                raise NothingToRegenerate
            previous = list(current.filter(created_at__gte=last_user.created_at))
        now = timezone.now()
        question = Message.objects.create(
            conversation=locked, role=Message.Role.USER, content=text, created_at=now
        )
        # One microsecond later, so the reply always sorts after the message it answers.
        reply = _new_reply(locked, now + timezone.timedelta(microseconds=1))
        # Editing the last message: it and its replies become earlier versions.
        for old in previous:
            _supersede(old, question if old.role == Message.Role.USER else reply)
        _touch(conversation, locked, now, text)
        # Read here, where the rows are at hand, rather than by the generation a moment later:
        # the model is asked one database round trip sooner.
        history = model_messages(locked, reply.pk)
        quota.reserve(reply, history, locked.owner_id)
    return reply, history


@database_sync_to_async
def store_regeneration(conversation: Conversation) -> tuple[Message, list[dict[str, str]]]:
    with transaction.atomic():
        locked = _lock_idle(conversation)
        last = locked.messages.filter(superseded_by__isnull=True).order_by("created_at").last()
        if not last or last.role != Message.Role.ASSISTANT:
            raise NothingToRegenerate
        now = timezone.now()
        reply = _new_reply(locked, now)
        _supersede(last, reply)
        _touch(conversation, locked, now, None)
        history = model_messages(locked, reply.pk)
        quota.reserve(reply, history, locked.owner_id)
    return reply, history


def question_of(reply: Message) -> Message | None:
    """The user's message that `reply` answers: the current one just before it."""
    return (
        Message.objects.filter(
            conversation_id=reply.conversation_id,
            role=Message.Role.USER,
            created_at__lt=reply.created_at,
            superseded_by__isnull=True,
        )
        .order_by("-created_at")
        .first()
    )


def model_messages(conversation: Conversation, reply_id: uuid.UUID) -> list[dict[str, str]]:
    """What the model is sent to write reply `reply_id`: the system prompt and the current
    messages before it."""
    messages: list[dict[str, str]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for role, content in (
        conversation.messages.filter(superseded_by__isnull=True)
        .exclude(pk=reply_id)
        .exclude(content="")
        .order_by("created_at")
        .values_list("role", "content")
    ):
        messages.append({"role": role, "content": content})
    return messages
