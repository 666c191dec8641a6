"""The websocket a chat page keeps open to watch its conversation.

It is a watcher only: sending, stopping and every other change go through CSRF-protected POSTs.
It forwards the conversation's events to the page as HTML fragments that the htmx ws extension
swaps in, and keeps, per streaming reply, how much text the page already has, so a delta that
repeats text is trimmed and a delta that skips text triggers a sync instead of leaving a hole.
"""

import asyncio
import json
import logging
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from . import generation
from .models import Conversation, Message, recent_conversations

logger = logging.getLogger(__name__)

CHAT_TEMPLATE = "conversations/chat.html"


@database_sync_to_async
def _owned_conversation(user, conversation_id: uuid.UUID) -> Conversation | None:
    if not user.is_authenticated:
        return None
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


@database_sync_to_async
def _streaming_reply(conversation_id: uuid.UUID) -> Message | None:
    generation.mark_stale_replies_interrupted(conversation_id)
    return (
        Message.objects.filter(conversation_id=conversation_id, status=Message.Status.STREAMING)
        .order_by("-created_at")
        .first()
    )


@database_sync_to_async
def _finished_replies(conversation_id: uuid.UUID, reply_ids: list[str]) -> list[str]:
    generation.mark_stale_replies_interrupted(conversation_id)
    still_streaming = set(
        Message.objects.filter(pk__in=reply_ids, status=Message.Status.STREAMING).values_list(
            "pk", flat=True
        )
    )
    return [reply_id for reply_id in reply_ids if uuid.UUID(reply_id) not in still_streaming]


@database_sync_to_async
def _render_turn(conversation: Conversation, reply_id: uuid.UUID) -> str:
    reply = Message.objects.get(pk=reply_id, conversation=conversation)
    question = (
        conversation.messages.filter(role=Message.Role.USER, created_at__lt=reply.created_at)
        .order_by("-created_at")
        .first()
    )
    conversation.refresh_from_db(fields=["title", "updated_at"])
    return render_to_string(
        "conversations/stream/turn.html",
        {
            "messages": [m for m in (question, reply) if m],
            "busy": True,
            "conversation": conversation,
            **_sidebar_context(conversation),
        },
    )


@database_sync_to_async
def _render_reply(conversation: Conversation, reply_id: uuid.UUID) -> str:
    reply = Message.objects.get(pk=reply_id, conversation=conversation)
    return render_to_string(
        "conversations/stream/reply.html",
        {"message": reply, "busy": reply.is_streaming, "conversation": conversation},
    )


def _sidebar_context(conversation: Conversation) -> dict:
    return {
        "conversations": recent_conversations(conversation.owner_id),
        "current_conversation": conversation,
    }


class ConversationConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    watchdog: asyncio.Task | None = None

    async def connect(self) -> None:
        self.offsets: dict[str, int] = {}
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.conversation = await _owned_conversation(self.scope["user"], conversation_id)
        if self.conversation is None:
            # Rejecting the handshake reveals nothing: anonymous users, other users' and
            # unknown conversations all look the same.
            await self.close()
            return
        self.group = generation.group_for_conversation(self.conversation.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.watchdog = asyncio.create_task(self._watch_for_dead_generators())
        reply = await _streaming_reply(self.conversation.pk)
        if reply:
            # The page shows what the database held when it was rendered; resend that prefix
            # with its length as our offset, then ask the generator for everything after it.
            self.offsets[str(reply.pk)] = len(reply.content)
            await self.send(text_data=await _render_reply(self.conversation, reply.pk))
            await generation.request_sync(reply.pk, self.channel_name, len(reply.content))

    async def disconnect(self, code: int) -> None:
        if self.watchdog:
            self.watchdog.cancel()
        if self.conversation is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _watch_for_dead_generators(self) -> None:
        """Finish, on this page, replies whose generator died without saying so.

        A process killed mid-reply never sends `reply.done`; once its heartbeat is older than
        CHAT_STALE_SECONDS the reply is marked interrupted and shown as such.
        """
        while True:
            await asyncio.sleep(max(1.0, settings.CHAT_STALE_SECONDS / 3))
            if not self.offsets:
                continue
            for reply_id in await _finished_replies(self.conversation.pk, list(self.offsets)):
                await self.reply_done({"reply_id": reply_id})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Nothing is sent over this socket: messages go through POST, which carries CSRF.
        # Answer anything else with an error and keep the stream open.
        await self.send(text_data=json.dumps({"error": "This socket only streams replies."}))

    async def conversation_turn(self, event: dict) -> None:
        self.offsets.setdefault(event["reply_id"], 0)
        await self.send(text_data=await _render_turn(self.conversation, event["reply_id"]))

    async def reply_delta(self, event: dict) -> None:
        reply_id, start, text = event["reply_id"], event["start"], event["text"]
        offset = self.offsets.get(reply_id)
        if offset is None:
            return
        if start > offset:
            await generation.request_sync(uuid.UUID(reply_id), self.channel_name, offset)
            return
        fresh = text[offset - start :]
        if not fresh:
            return
        self.offsets[reply_id] = offset + len(fresh)
        await self.send(
            text_data=render_to_string(
                "conversations/stream/delta.html", {"reply_id": reply_id, "text": fresh}
            )
        )

    async def reply_done(self, event: dict) -> None:
        self.offsets.pop(event["reply_id"], None)
        await self.send(text_data=await _render_reply(self.conversation, event["reply_id"]))
