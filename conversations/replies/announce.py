"""Telling a user's open pages what changed: their conversation list, a conversation's title."""

import uuid

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import fragments
from conversations.db import unit_of_work
from conversations.replies import events


def _sidebar_event(owner_id: int) -> dict:
    return {"type": events.SIDEBAR_CHANGED, "html": fragments.conversation_list(owner_id)}


async def sidebar_changed(owner_id: int, *, in_request: bool = True) -> None:
    """Send every open page of this user its new conversation list.

    In a request the list is rendered on the request's thread, with its connection; elsewhere
    (`in_request=False`) as a unit of work of its own (conversations/db.py).
    """
    render = database_sync_to_async if in_request else unit_of_work
    event = await render(_sidebar_event)(owner_id)
    await get_channel_layer().group_send(events.user_group(owner_id), event)


def sidebar_changed_sync(owner_id: int) -> None:
    """sidebar_changed() for synchronous code: the list is rendered on the caller's thread."""
    event = _sidebar_event(owner_id)
    async_to_sync(get_channel_layer().group_send)(events.user_group(owner_id), event)


async def title_changed(conversation_id: uuid.UUID) -> None:
    """Every page open on the conversation shows its title again."""
    await get_channel_layer().group_send(
        events.conversation_group(conversation_id), {"type": events.CONVERSATION_TITLE}
    )


def title_changed_sync(conversation_id: uuid.UUID) -> None:
    """title_changed() for synchronous code."""
    async_to_sync(title_changed)(conversation_id)
