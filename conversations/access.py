"""Who may see a conversation: its owner, and no one else.

The one check, for the pages, the API and the websocket. Another user's conversation and one
that never existed are the same 404, so an id reveals nothing: the pages answer it as Django
does, the API as its JSON `not_found` (api/auth.py), and the websocket refuses the handshake.
"""

import uuid

from django.shortcuts import aget_object_or_404, get_object_or_404

from conversations.models import Conversation, Message


def get_conversation_for_user(user, conversation_id: uuid.UUID) -> Conversation:
    """The user's conversation `conversation_id`, or Http404."""
    return get_object_or_404(Conversation, pk=conversation_id, owner=user)


async def aget_conversation_for_user(user, conversation_id: uuid.UUID) -> Conversation:
    return await aget_object_or_404(Conversation, pk=conversation_id, owner=user)


def get_message_for_user(
    user, conversation_id: uuid.UUID, message_id: uuid.UUID, **filters
) -> tuple[Conversation, Message]:
    """The user's conversation and its current message `message_id` (narrowed by `filters`,
    such as a role), or Http404."""
    conversation = get_conversation_for_user(user, conversation_id)
    message = get_object_or_404(
        conversation.messages, pk=message_id, superseded_by__isnull=True, **filters
    )
    return conversation, message


async def aget_message_for_user(
    user, conversation_id: uuid.UUID, message_id: uuid.UUID, **filters
) -> tuple[Conversation, Message]:
    conversation = await aget_conversation_for_user(user, conversation_id)
    message = await aget_object_or_404(
        conversation.messages, pk=message_id, superseded_by__isnull=True, **filters
    )
    return conversation, message
