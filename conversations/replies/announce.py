"""Telling a user's open pages that their conversation list changed."""

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from conversations import fragments
from conversations.db import unit_of_work
from conversations.replies import events


async def sidebar_changed(owner_id: int, *, in_request: bool = True) -> None:
    """Send every open page of this user its new conversation list.

    In a request the list is rendered on the request's thread, with its connection; elsewhere
    (`in_request=False`) as a unit of work of its own (conversations/db.py).
    """
    render = database_sync_to_async if in_request else unit_of_work
    html = await render(fragments.conversation_list)(owner_id)
    await get_channel_layer().group_send(
        events.user_group(owner_id), {"type": events.SIDEBAR_CHANGED, "html": html}
    )
