"""Waiting for replies that the tests start."""

import asyncio
import uuid

from conversations.replies import running


async def wait_for_reply(message_id: uuid.UUID) -> None:
    """Wait until the generation of this reply, if running in this process, has finished."""
    entry = running.generations.get(message_id)
    if entry:
        await asyncio.shield(entry[1])
