"""Stopping a reply, from any process: the request goes to the generator's control group
(replies/generate.py listens on it) and is left in the cache too, where a generator that was
only just started looks first."""

import functools
import uuid

from channels.layers import get_channel_layer
from django.core.cache import caches

from conversations.db import unit_of_work
from conversations.replies import events


@functools.cache
def _stop_requests():
    """The cache that holds stop requests: one client for the whole process.

    `django.core.cache.cache` is a client per context, and every generation runs in a context
    of its own: with Redis, each reply opened a connection of its own for one GET.
    """
    return caches.create_connection("default")


def _stop_key(message_id: uuid.UUID) -> str:
    return f"stop-requested:{message_id.hex}"


async def request_stop(message_id: uuid.UUID) -> None:
    """Ask the generation of this reply to stop, whichever process runs it.

    A generation that has not yet joined its control group (it was started a moment ago)
    would miss the message, so the request is also left in the cache, where it looks first.
    """
    await unit_of_work(_stop_requests().set)(_stop_key(message_id), True, timeout=3600)
    await get_channel_layer().group_send(
        events.generation_group(message_id), {"type": events.GENERATION_STOP}
    )


async def stop_requested(message_id: uuid.UUID) -> bool:
    """Whether a stop of this reply was asked before its generator listened for one."""
    return bool(await unit_of_work(_stop_requests().get)(_stop_key(message_id)))
