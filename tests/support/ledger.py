"""Replies that cost tokens, written as the app writes them: the message with the provider's
report, and its settled entry in the usage ledger (what the quota and usage pages count)."""

from datetime import datetime

from django.utils import timezone

from conversations.models import Conversation, Message, UsageEntry


def paid_reply(
    conversation: Conversation,
    *,
    prompt: int,
    completion: int,
    model: str = "gpt-4o-mini",
    created_at: datetime | None = None,
    **fields,
) -> Message:
    """A finished reply the provider reported as `prompt` + `completion` tokens."""
    created_at = created_at or timezone.now()
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="An answer",
        created_at=created_at,
        metadata={"model": model, "usage": usage},
        **fields,
    )
    UsageEntry.objects.create(
        user_id=conversation.owner_id,
        created_at=created_at,
        model=model,
        **usage,
        state=UsageEntry.State.SETTLED,
        source=UsageEntry.Source.REPORTED,
        settled_at=created_at,
        reply_id=reply.pk,
        conversation=conversation,
        message=reply,
    )
    return reply
