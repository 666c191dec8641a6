"""The websocket every chat page keeps open.

It is a watcher only: sending, stopping and every other change go through CSRF-protected POSTs.
It forwards events to the page as HTML fragments that the htmx ws extension swaps in:
- the user's events (group `user-<id>`): the conversation list changed, on every open page;
- on a conversation page, the conversation's events (group `conversation-<id>`): a new turn,
  reply text, a finished reply, a new title.
Per streaming reply it keeps how much text the page already has, so a delta that repeats text
is trimmed and a delta that skips text triggers a sync from the generator instead of a hole.
"""

import asyncio
import json
import time
import uuid
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from . import generation
from .db import unit_of_work
from .models import Conversation, Message, current_messages


@unit_of_work
def _owned_conversation(user, conversation_id: uuid.UUID) -> Conversation | None:
    return Conversation.objects.filter(pk=conversation_id, owner=user).first()


@unit_of_work
def _latest_message(conversation_id: uuid.UUID) -> Message | None:
    generation.mark_stale_replies_interrupted(conversation_id)
    return (
        Message.objects.filter(conversation_id=conversation_id, superseded_by__isnull=True)
        .order_by("-created_at")
        .first()
    )


@unit_of_work
def _finished_replies(reply_ids: list[str]) -> list[str]:
    streaming = {
        str(pk)
        for pk in Message.objects.filter(
            pk__in=reply_ids, status=Message.Status.STREAMING
        ).values_list("pk", flat=True)
    }
    return [reply_id for reply_id in reply_ids if reply_id not in streaming]


@unit_of_work
def _render_turn(conversation: Conversation, reply_id: str) -> tuple[str, Message]:
    reply = Message.objects.get(pk=reply_id, conversation=conversation)
    question = (
        conversation.messages.filter(
            role=Message.Role.USER, created_at__lt=reply.created_at, superseded_by__isnull=True
        )
        .order_by("-created_at")
        .first()
    )
    conversation.refresh_from_db(fields=["title", "updated_at"])
    html = render_to_string(
        "conversations/stream/turn.html",
        {
            "chat_messages": [m for m in (question, reply) if m],
            "busy": True,
            "conversation": conversation,
        },
    )
    return html, reply


@unit_of_work
def _render_conversation(conversation: Conversation) -> tuple[str, list[Message]]:
    """The message list as it stands, after an edit or a regeneration rewrote its end."""
    messages = current_messages(conversation, limit=settings.CHAT_PAGE_MESSAGES)
    busy = any(m.is_streaming for m in messages)
    html = render_to_string(
        "conversations/stream/refresh.html",
        {"chat_messages": messages, "busy": busy, "conversation": conversation},
    )
    return html, messages


@unit_of_work
def _render_reply(conversation: Conversation, reply_id: str) -> tuple[str, Message]:
    reply = Message.objects.get(pk=reply_id, conversation=conversation)
    reply.versions = list(reply.earlier_versions.order_by("created_at"))
    html = render_to_string(
        "conversations/stream/reply.html",
        {"message": reply, "busy": reply.is_streaming, "conversation": conversation},
    )
    return html, reply


@unit_of_work
def _render_title(conversation: Conversation) -> str:
    conversation.refresh_from_db(fields=["title"])
    return render_to_string("conversations/stream/title.html", {"conversation": conversation})


GROUP_RENEWAL_SECONDS = 3600


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    reconciler: asyncio.Task | None = None
    groups_joined: tuple[str, ...] = ()

    async def connect(self) -> None:
        # Per reply streaming on this page: how many characters of it the page has.
        self.offsets: dict[str, int] = {}
        # Replies this page has been sent whole, so a late event does not add them twice.
        self.shown: set[str] = set()
        # Replies with a sync asked of their generator and not yet answered.
        self.syncing: set[str] = set()
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()
            return
        conversation_id = self.scope["url_route"]["kwargs"].get("conversation_id")
        groups = [generation.group_for_user(user.pk)]
        if conversation_id:
            self.conversation = await _owned_conversation(user, conversation_id)
            if self.conversation is None:
                # Rejecting the handshake reveals nothing: another user's conversation and an
                # unknown one look the same.
                await self.close()
                return
            groups.append(generation.group_for_conversation(self.conversation.pk))
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = tuple(groups)
        await self.accept()
        self.reconciler = asyncio.create_task(self._reconcile_forever())
        if self.conversation:
            generation.ensure_sweeper()
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Bring the page up to date: it may have been rendered, or lost its socket, a while ago.

        The page names the last message it shows (`?last=<id>` in the socket URL). If the
        conversation moved on since, the whole list is sent again; otherwise only the last reply,
        which may still be streaming.
        """
        query = parse_qs(self.scope.get("query_string", b"").decode())
        page_last = (query.get("last") or [""])[0]
        latest = await _latest_message(self.conversation.pk)
        if latest and str(latest.pk) != page_last:
            await self.conversation_refresh({})
        elif latest and latest.role == Message.Role.ASSISTANT:
            await self._resume(latest)

    async def _resume(self, reply: Message) -> None:
        # The page shows the reply as it was when the page was rendered, and events sent since
        # are lost to it. Resend the reply as stored now; if it is still streaming, ask the
        # generator for everything after the prefix just sent.
        await self._send_rendered(*await _render_reply(self.conversation, str(reply.pk)))
        offset = self.offsets.get(str(reply.pk))
        if offset is not None:
            await generation.request_sync(reply.pk, self.channel_name, offset)

    async def _send_rendered(self, html: str, reply: Message) -> None:
        """Send a fragment that shows `reply` whole, and remember how much of it the page has.

        The text was read from the database when the fragment was rendered, which may be later
        than the event that asked for it: deltas are counted from what was actually sent.
        """
        self.shown.add(str(reply.pk))
        if reply.is_streaming:
            self.offsets[str(reply.pk)] = len(reply.content)
        else:
            self.offsets.pop(str(reply.pk), None)
        await self.send(text_data=html)

    async def _reconcile_forever(self) -> None:
        """Every few seconds, check this page against the database and the channel layer.

        The channel layer may drop messages (a full channel), including the one saying a reply
        is done, and a generator that died sends none: the database has the last word. Group
        memberships also expire (after a day, in both layers), so they are renewed hourly.
        """
        interval = max(1.0, settings.CHAT_STALE_SECONDS / 3)
        joined_at = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            self.syncing.clear()  # an unanswered sync may be asked again
            if self.offsets:
                for reply_id in await _finished_replies(list(self.offsets)):
                    await self.reply_done({"reply_id": reply_id})
            if time.monotonic() - joined_at > GROUP_RENEWAL_SECONDS:
                for group in self.groups_joined:
                    await self.channel_layer.group_add(group, self.channel_name)
                joined_at = time.monotonic()

    async def disconnect(self, code: int) -> None:
        if self.reconciler:
            self.reconciler.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Nothing is sent over this socket: messages go through POST, which carries CSRF.
        # Answer anything else with an error and keep the stream open.
        await self.send(text_data=json.dumps({"error": "This socket only streams replies."}))

    async def sidebar_changed(self, event: dict) -> None:
        await self.send(text_data=event["html"])

    async def conversation_turn(self, event: dict) -> None:
        if event["reply_id"] in self.shown:
            return  # already part of a whole list this page was sent
        await self._send_rendered(*await _render_turn(self.conversation, event["reply_id"]))

    async def conversation_refresh(self, event: dict) -> None:
        html, messages = await _render_conversation(self.conversation)
        streaming = next((m for m in messages if m.is_streaming), None)
        self.offsets = {str(streaming.pk): len(streaming.content)} if streaming else {}
        self.shown.update(str(m.pk) for m in messages)
        await self.send(text_data=html)

    async def conversation_title(self, event: dict) -> None:
        await self.send(text_data=await _render_title(self.conversation))

    async def reply_delta(self, event: dict) -> None:
        reply_id, start, text = event["reply_id"], event["start"], event["text"]
        offset = self.offsets.get(reply_id)
        if offset is None:
            if reply_id not in self.shown:
                # Text of a reply this page has not heard of: its turn was lost on the way.
                await self.conversation_refresh({})
            return
        if start > offset:
            if reply_id not in self.syncing:
                self.syncing.add(reply_id)
                await generation.request_sync(uuid.UUID(reply_id), self.channel_name, offset)
            return
        self.syncing.discard(reply_id)
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
        await self._send_rendered(*await _render_reply(self.conversation, event["reply_id"]))


class UnknownRouteConsumer(AsyncWebsocketConsumer):
    """Any other websocket path: refused, as a 404 would be, without an error in the log."""

    async def connect(self) -> None:
        await self.close()
