"""The stale-reply sweeper: every process that serves chats marks replies whose generator
stopped beating (its process died) as interrupted, and takes their lease, so that a generator
that was only paused finds it gone at its next write and writes no more."""

import asyncio
import logging
import uuid

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from conversations.db import unit_of_work
from conversations.models import Conversation, Message, stale_streaming_cutoff
from conversations.replies import events, quota, running

logger = logging.getLogger(__name__)


def reply_streaming(conversation: Conversation) -> bool:
    """Whether a reply of the conversation is being written. One whose process died does not
    count: it is marked interrupted, then the question is asked again. Only then: most
    conversations have none, and one query says so."""
    streaming = conversation.messages.filter(status=Message.Status.STREAMING)
    return streaming.exists() and (
        not mark_stale_replies_interrupted(conversation_id=conversation.pk) or streaming.exists()
    )


def mark_stale_replies_interrupted(
    conversation_id: uuid.UUID | None = None,
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Mark replies whose generator stopped beating (its process died) as interrupted, and
    take their lease: a generator that was only paused finds it gone and writes no more.

    Returns the (conversation id, reply id) of each reply marked.
    """
    stale = Message.objects.filter(
        status=Message.Status.STREAMING, updated_at__lt=stale_streaming_cutoff()
    )
    if conversation_id:
        stale = stale.filter(conversation_id=conversation_id)
    marked = []
    for conversation_pk, reply_pk in stale.values_list("conversation_id", "pk"):
        if reply_pk in running.generations:
            # Generated here, so alive, whatever its heartbeat says: its writes failed for want
            # of a database connection, and it holds text that only it can store.
            continue
        # Re-checked row by row: a reply whose generator beat meanwhile is left alone.
        if (
            Message.objects.filter(pk=reply_pk, status=Message.Status.STREAMING)
            .filter(updated_at__lt=stale_streaming_cutoff())
            .update(status=Message.Status.INTERRUPTED, updated_at=timezone.now(), lease=None)
        ):
            marked.append((conversation_pk, reply_pk))
    quota.settle_ended(None if conversation_id is None else [reply for _, reply in marked])
    return marked


async def _sweep_forever() -> None:
    """Every process that serves chats also looks for replies orphaned by a dead process."""
    interval = max(1.0, settings.CHAT_STALE_SECONDS / 3)
    while True:
        await asyncio.sleep(interval)
        try:
            marked = await unit_of_work(mark_stale_replies_interrupted)()
            for conversation_id, reply_id in marked:
                await get_channel_layer().group_send(
                    events.conversation_group(conversation_id), events.reply_done(reply_id)
                )
        except Exception:
            logger.exception("Sweeping stale replies failed")


def ensure_sweeper() -> None:
    running.ensure_forever(_sweep_forever)
