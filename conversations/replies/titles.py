"""Automatic titles: after a conversation's first complete reply, the model names it. Runs after
the reply, never delaying it; asked once, and a name given meanwhile stands."""

import logging
import uuid

from django.db import transaction

from conversations.db import unit_of_work
from conversations.llm import client
from conversations.models import Conversation
from conversations.replies import announce, turns

logger = logging.getLogger(__name__)


TITLE_INSTRUCTIONS = (
    "You name conversations. Reply with a title of at most six words for the conversation "
    "below: no quotes, no final period, in the language of the conversation."
)


@unit_of_work
def _title_request(conversation_id: uuid.UUID) -> list[dict[str, str]] | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None or conversation.metadata.get("title_source"):
        return None  # deleted meanwhile, or named already
    first_two = list(
        conversation.messages.filter(superseded_by__isnull=True)
        .exclude(content="")
        .order_by("created_at")
        .values_list("role", "content")[:2]
    )
    excerpt = "\n\n".join(f"{role}: {content[:1500]}" for role, content in first_two)
    return [
        {"role": "system", "content": TITLE_INSTRUCTIONS},
        {"role": "user", "content": excerpt},
    ]


@unit_of_work
def _store_title(conversation_id: uuid.UUID, title: str) -> Conversation | None:
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None or conversation.metadata.get("title_source"):
            return None  # deleted, or named meanwhile (another reply, an operator): that stands
        conversation.metadata["title_source"] = "model" if title else "first-message"
        conversation.title = title or conversation.title
        conversation.save(update_fields=["title", "metadata"])
    return conversation if title else None


async def auto_title(conversation_id: uuid.UUID, model: str, provider: str = "") -> None:
    """Name the conversation from its first exchange; runs after the reply, never delaying it."""
    request = await _title_request(conversation_id)
    if request is None:
        return
    try:
        answer = await client.complete(request, model=model, provider=provider)
    except client.ProviderError as error:
        logger.info("No title for conversation %s: %s", conversation_id, error.user_message)
        answer = ""
    title = (
        turns.title_from(answer.strip().splitlines()[0].strip(" \"'*#.")) if answer.strip() else ""
    )
    # Asked once: without an answer the title made from the first message stays.
    conversation = await _store_title(conversation_id, title)
    if conversation:
        await announce.title_changed(conversation_id)
        await announce.sidebar_changed(conversation.owner_id, in_request=False)
