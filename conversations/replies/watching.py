"""Watching streaming replies: the one protocol behind a chat page's websocket and the API's
server-sent events.

A watcher (`Follower`) shows some replies and knows how many characters of each it has shown.
It follows a streaming reply from that offset: the generator, in this process or another
(replies/events.py), sends the text from there on in deltas that each carry the offset of
their first character. `fresh_text()` keeps the watcher exact: text it already has is trimmed,
and a delta that starts past its offset (a batch lost on the way) makes it ask again from the
offset, instead of leaving a hole. The database has the last word on whether a reply is still
streaming: a watcher checks it every few seconds (`stored_if_finished`), since a generator
whose process died announces nothing.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings

from conversations.db import unit_of_work
from conversations.models import Message
from conversations.replies import events, running, sweeper


def reconcile_seconds() -> float:
    """How often a watcher checks its replies against the database."""
    return max(1.0, settings.CHAT_STALE_SECONDS / 3)


# An unanswered request to follow a reply (its generator had not joined its group yet, or the
# request was lost) is made again after this long.
ASK_AGAIN_SECONDS = 1.0


class ReplyGone(Exception):
    """The reply was deleted with its conversation while it was watched."""


class Follower:
    """What one watcher has of the streaming replies it shows, and how it gets the rest.

    Deltas from a generator in this process arrive in `inbox`; those from another process on
    the watcher's channel-layer `channel` (a websocket consumer has one; without one, only
    replies generated here can be followed, which is all an API response needs).
    """

    def __init__(self, channel: str = "") -> None:
        self.channel = channel
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.offsets: dict[str, int] = {}
        # Replies asked for from an offset (followed, or a gap seen) and not yet answered.
        self.asked: dict[str, float] = {}
        self._elsewhere: set[str] = set()

    async def follow(self, reply_id: str, offset: int) -> bool:
        """Show reply `reply_id` on from `offset`: the watcher has its first `offset` characters.

        False when no generator can be asked: none runs in this process and the watcher has no
        channel to be answered on. The database then tells how the reply stands.
        """
        self.offsets[reply_id] = offset
        self.asked.pop(reply_id, None)
        return await self._ask(reply_id, offset)

    async def forget(self, reply_id: str) -> None:
        """Stop following a reply: it is shown whole now, or no longer shown at all."""
        if self.offsets.pop(reply_id, None) is None:
            return
        self.asked.pop(reply_id, None)
        running.unfollow_here(uuid.UUID(reply_id), self.inbox)
        if reply_id in self._elsewhere:
            self._elsewhere.discard(reply_id)
            await request_unfollow(uuid.UUID(reply_id), self.channel)

    async def close(self) -> None:
        for reply_id in list(self.offsets):
            await self.forget(reply_id)

    async def _ask(self, reply_id: str, offset: int) -> bool:
        if running.follow_here(uuid.UUID(reply_id), self.inbox, offset):
            return True
        if not self.channel:
            return False
        # Answered by a delta from `offset`, even an empty one.
        self.asked[reply_id] = time.monotonic()
        self._elsewhere.add(reply_id)
        await request_follow(uuid.UUID(reply_id), self.channel, offset)
        return True

    async def fresh_text(self, event: dict) -> str:
        """The part of delta `event` this watcher does not have yet, now counted as shown.

        Empty for a reply it does not follow, for text it has, and for a delta past its offset,
        which asks the generator again for the text from the offset.
        """
        reply_id, start, text = event["reply_id"], event["start"], event["text"]
        offset = self.offsets.get(reply_id)
        if offset is None:
            return ""
        if start > offset:
            if reply_id not in self.asked:
                self.asked[reply_id] = time.monotonic()
                await self._ask(reply_id, offset)
            return ""
        self.asked.pop(reply_id, None)
        fresh = text[offset - start :]
        self.offsets[reply_id] = offset + len(fresh)
        return fresh

    def to_reconcile(self) -> list[str]:
        """The followed replies whose state only the database can tell: those generated in
        another process, or whose generator here has ended."""
        return [
            reply_id
            for reply_id in self.offsets
            if not running.is_running_here(uuid.UUID(reply_id))
        ]

    async def ask_again_if_unanswered(self) -> None:
        now = time.monotonic()
        for reply_id, asked_at in list(self.asked.items()):
            if now - asked_at >= ASK_AGAIN_SECONDS and reply_id in self.offsets:
                self.asked[reply_id] = now
                await self._ask(reply_id, self.offsets[reply_id])


@unit_of_work
def finished_replies(reply_ids: list[str]) -> list[str]:
    """Those of `reply_ids` that are no longer streaming (or no longer exist)."""
    streaming = {
        str(pk)
        for pk in Message.objects.filter(
            pk__in=reply_ids, status=Message.Status.STREAMING
        ).values_list("pk", flat=True)
    }
    return [reply_id for reply_id in reply_ids if reply_id not in streaming]


@unit_of_work
def stored_if_finished(reply_id: uuid.UUID) -> Message | None:
    """The reply as stored, once it is no longer streaming (a dead generator's is marked so)."""
    reply = Message.objects.filter(pk=reply_id).first()
    if reply is None:
        raise ReplyGone
    if reply.is_streaming:
        sweeper.mark_stale_replies_interrupted(reply.conversation_id)
        reply.refresh_from_db()
    return None if reply.is_streaming else reply


# What `reply_events` yields, each with its data.
TEXT = "delta"  # the next piece of the reply's text
QUIET = "keep-alive"  # nothing new for CHAT_API_KEEPALIVE_SECONDS
FINISHED = "done"  # the reply as stored, at the end
CUT = "cut"  # the reply as stored, at the end, shorter than what was sent


async def reply_events(reply_id: uuid.UUID) -> AsyncIterator[tuple[str, object]]:
    """Follow one reply from its start: (TEXT, text) as it arrives, (QUIET, None) after
    CHAT_API_KEEPALIVE_SECONDS of silence, and at last (FINISHED, the reply as stored).
    Raises ReplyGone if it is deleted meanwhile.

    The last event is (CUT, the reply as stored) instead when less of it was stored than was
    sent: its generator was taken for dead midway (a paused process) and the reply marked
    interrupted with the text of its last write, which its late writes do not change.
    """
    key = str(reply_id)
    follower = Follower()
    keepalive = settings.CHAT_API_KEEPALIVE_SECONDS
    reconcile_every = reconcile_seconds()
    last_sent = last_reconciled = time.monotonic()
    if not await follower.follow(key, 0):
        last_reconciled = 0.0  # not generated here (any more): ask the database at once
    try:
        while True:
            now = time.monotonic()
            event = None
            if now - last_reconciled < reconcile_every:
                # asyncio.timeout, not wait_for: on 3.11 wait_for makes a task of every get().
                try:
                    async with asyncio.timeout(min(keepalive, reconcile_every)):
                        event = await follower.inbox.get()
                except TimeoutError:
                    pass
                now = time.monotonic()
            finished = None
            if event is not None and event["type"] == events.REPLY_DELTA:
                fresh = await follower.fresh_text(event)
                if fresh:
                    last_sent = now
                    yield TEXT, fresh
            elif event is not None or now - last_reconciled >= reconcile_every:
                last_reconciled = now
                # The generator says it is done, or it is not here and has been quiet: the
                # database decides. A generator here cannot end without saying so.
                if event is not None or not running.is_running_here(reply_id):
                    finished = await stored_if_finished(reply_id)
            if finished is not None:
                shown = follower.offsets.get(key, 0)
                if len(finished.content) < shown:
                    yield CUT, finished
                    return
                if len(finished.content) > shown:
                    yield TEXT, finished.content[shown:]
                yield FINISHED, finished
                return
            if now - last_sent >= keepalive:
                last_sent = now
                yield QUIET, None
    finally:
        await follower.close()


async def request_follow(message_id: uuid.UUID, reply_channel: str, offset: int) -> None:
    """Ask the generation, in whichever process, to send `reply_channel` its text from
    `offset` on, then each batch. Asked again, it answers again from the offset given."""
    await get_channel_layer().group_send(
        events.generation_group(message_id),
        {"type": events.GENERATION_FOLLOW, "reply_channel": reply_channel, "offset": offset},
    )


async def request_unfollow(message_id: uuid.UUID, reply_channel: str) -> None:
    await get_channel_layer().group_send(
        events.generation_group(message_id),
        {"type": events.GENERATION_UNFOLLOW, "reply_channel": reply_channel},
    )
