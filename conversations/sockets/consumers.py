"""The websocket every chat page keeps open.

It is a watcher only: sending, stopping and every other change go through CSRF-protected POSTs.
It forwards events (conversations/replies/events.py) to the page as HTML fragments that the htmx ws
extension swaps in:
- the user's events: the conversation list changed, on every open page;
- on a conversation page, the conversation's events: a new turn, a rewritten end, a finished
  reply, a new title;
- the text of the streaming reply the page shows, which it follows (replies/watching.py):
  handed over directly by a generator in this process, through its channel from another.

It lives only as long as its sign-in (conversations/sockets/security.py), and a user holds at
most CHAT_MAX_SOCKETS_PER_USER at once (conversations/sockets/slots.py).
"""

import asyncio
import json
import logging
import time
import uuid
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http import Http404
from django.template.loader import render_to_string

from conversations import errors, rendering
from conversations.access import get_conversation_for_user
from conversations.db import unit_of_work
from conversations.models import Conversation, Message, current_messages
from conversations.replies import events, sweeper, turns, watching
from conversations.sockets import security
from conversations.sockets.slots import TOO_MANY_SOCKETS_MESSAGE, SocketSlot


@unit_of_work
def _owned_conversation(user, conversation_id: uuid.UUID) -> Conversation | None:
    try:
        return get_conversation_for_user(user, conversation_id)
    except Http404:
        return None


@unit_of_work
def _latest_message(conversation_id: uuid.UUID) -> Message | None:
    sweeper.mark_stale_replies_interrupted(conversation_id)
    return (
        Message.objects.filter(conversation_id=conversation_id, superseded_by__isnull=True)
        .order_by("-created_at")
        .first()
    )


@unit_of_work
def _render_turn(conversation: Conversation, reply_id: str) -> tuple[str, Message]:
    reply = Message.objects.get(pk=reply_id, conversation=conversation)
    question = turns.question_of(reply)
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


logger = logging.getLogger(__name__)

GROUP_RENEWAL_SECONDS = 3600


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    missed_an_event = False
    groups_joined: tuple[str, ...] = ()
    tasks: tuple[asyncio.Task, ...] = ()
    slot: SocketSlot | None = None
    session_key: str | None = None

    async def connect(self) -> None:
        # The streaming replies on this page, and how much of each it has.
        self.follower = watching.Follower(self.channel_name)
        # Replies this page has been sent whole, so a late event does not add them twice.
        self.shown: set[str] = set()
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()
            return
        conversation_id = self.scope["url_route"]["kwargs"].get("conversation_id")
        groups = [events.user_group(user.pk)]
        if conversation_id:
            self.conversation = await _owned_conversation(user, conversation_id)
            if self.conversation is None:
                # Rejecting the handshake reveals nothing: another user's conversation and an
                # unknown one look the same.
                await self.close()
                return
            groups.append(events.conversation_group(self.conversation.pk))
        self.slot = await SocketSlot.take(user.pk)
        if self.slot is None:
            await self._refuse_one_too_many()
            return
        self.session_key = self.scope["session"].session_key
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = tuple(groups)
        await self.accept()
        self.tasks = (
            asyncio.create_task(self._reconcile_forever()),
            asyncio.create_task(self._deliver_forever()),
            asyncio.create_task(self._recheck_forever()),
        )
        if self.conversation:
            sweeper.ensure_sweeper()
            await self._catch_up()

    async def _refuse_one_too_many(self) -> None:
        """Past the user's cap: accepted only to say why under the composer, then closed with a
        code the page does not reconnect after (a refused handshake would be retried forever)."""
        await self.accept()
        await self.send(text_data=errors.composer_error(TOO_MANY_SOCKETS_MESSAGE))
        await self.close(code=events.CLOSED_TOO_MANY_SOCKETS)

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
            # The page shows the reply as it was when the page was rendered, and events sent
            # since are lost to it: the reply as stored now, and if it is still streaming, the
            # rest from the generator.
            await self._send_rendered(*await _render_reply(self.conversation, str(latest.pk)))

    async def _send_rendered(self, html: str, reply: Message) -> None:
        """Send a fragment that shows `reply` whole, and follow it if it is still streaming.

        The text was read from the database when the fragment was rendered, which may be later
        than the event that asked for it: the page follows on from what was actually sent.
        """
        reply_id = str(reply.pk)
        self.shown.add(reply_id)
        await self.send(text_data=html)
        if reply.is_streaming:
            await self.follower.follow(reply_id, len(reply.content))
        else:
            await self.follower.forget(reply_id)

    async def _deliver_forever(self) -> None:
        """Text of the replies followed in this process, straight from their generator.

        Not through the channel layer, nor through the consumer's dispatch (which takes a trip
        to a thread per message): a delta costs a queue hop and a websocket frame.
        """
        inbox = self.follower.inbox
        while True:
            event = await inbox.get()
            if event["type"] == events.REPLY_DELTA:
                await self.reply_delta(event)
            # The end of a reply comes to every page through the conversation's group.

    async def _reconcile_forever(self) -> None:
        """Check this page against the database and the channel layer.

        The channel layer may drop messages (a full channel), including the one saying a reply
        is done, and a generator that died sends none: the database has the last word, asked
        every few seconds about the replies not generated in this process (a generator here
        cannot end unseen). A follow unanswered is asked again after a second. Group memberships
        expire (after a day, in both layers), so they are renewed hourly.
        """
        reconcile_every = watching.reconcile_seconds()
        joined_at = reconciled_at = time.monotonic()
        while True:
            await asyncio.sleep(min(watching.ASK_AGAIN_SECONDS, reconcile_every))
            try:
                if self.missed_an_event:
                    self.missed_an_event = False
                    await self.conversation_refresh({})
                await self.follower.ask_again_if_unanswered()
            except Exception as error:
                self._missed(error)
                continue
            now = time.monotonic()
            if self.follower.offsets and now - reconciled_at >= reconcile_every:
                reconciled_at = now
                unsure = self.follower.to_reconcile()
                try:
                    for reply_id in await watching.finished_replies(unsure) if unsure else []:
                        await self.reply_done(events.reply_done(reply_id))
                except Exception as error:
                    self._missed(error)
            if now - joined_at > GROUP_RENEWAL_SECONDS:
                for group in self.groups_joined:
                    await self.channel_layer.group_add(group, self.channel_name)
                joined_at = now

    async def _recheck_forever(self) -> None:
        """Close this socket once its sign-in has ended; keep its slot while it lives.

        Logout, a password change and a deactivation close it at once (`session_ended`); this
        check catches whatever no signal tells, such as a session expired or deleted.
        """
        user_id = self.scope["user"].pk
        while True:
            await asyncio.sleep(settings.CHAT_SOCKET_RECHECK_SECONDS)
            try:
                signed_in = await security.still_signed_in(user_id, self.session_key)
                await self.slot.keep()
            except Exception as error:
                if not errors.is_overload(error):
                    logger.error("A chat page's check of its session failed", exc_info=error)
                continue  # asked again at the next check
            if not signed_in:
                await self._shut(events.CLOSED_SIGNED_OUT)
                return

    async def _shut(self, code: int) -> None:
        """Close the socket from this side, hearing nothing more first."""
        await self._leave()
        await self.close(code=code)

    async def _leave(self) -> None:
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = ()
        await self.follower.close()

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch, except that a conversation's event this page could not be shown
        (the database had no connection to spare) closes nothing: the page is brought up to
        date at the next check instead."""
        try:
            await super().dispatch(message)
        except Exception as error:
            if message["type"].startswith("websocket.") or not errors.is_overload(error):
                raise
            self._missed(error)

    def _missed(self, error: Exception) -> None:
        if not errors.is_overload(error):
            logger.error("A chat page's check failed", exc_info=error)
        self.missed_an_event = bool(self.conversation)

    async def disconnect(self, code: int) -> None:
        await self._leave()
        if self.slot is not None:
            await self.slot.release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Nothing is sent over this socket: messages go through POST, which carries CSRF.
        # Answer anything else with an error and keep the stream open.
        await self.send(text_data=json.dumps({"error": "This socket only streams replies."}))

    async def session_ended(self, event: dict) -> None:
        if event["session"] in ("", events.session_digest(self.session_key)):
            await self._shut(events.CLOSED_SIGNED_OUT)

    async def sidebar_changed(self, event: dict) -> None:
        await self.send(text_data=event["html"])

    async def conversation_turn(self, event: dict) -> None:
        if event["reply_id"] in self.shown:
            return  # already part of a whole list this page was sent
        await self._send_rendered(*await _render_turn(self.conversation, event["reply_id"]))

    async def conversation_refresh(self, event: dict) -> None:
        html, messages = await _render_conversation(self.conversation)
        self.shown.update(str(m.pk) for m in messages)
        await self.send(text_data=html)
        streaming = next((m for m in messages if m.is_streaming), None)
        for reply_id in list(self.follower.offsets):
            if streaming is None or reply_id != str(streaming.pk):
                await self.follower.forget(reply_id)
        if streaming:
            await self.follower.follow(str(streaming.pk), len(streaming.content))

    async def conversation_title(self, event: dict) -> None:
        await self.send(text_data=await _render_title(self.conversation))

    async def reply_delta(self, event: dict) -> None:
        fresh = await self.follower.fresh_text(event)
        if fresh:
            await self.send(text_data=rendering.delta_fragment(event["reply_id"], fresh))

    async def reply_done(self, event: dict) -> None:
        reply_id = event["reply_id"]
        if reply_id not in self.shown:
            # The end of a reply this page has not heard of: its turn was lost on the way.
            await self.conversation_refresh({})
            return
        await self._send_rendered(*await _render_reply(self.conversation, reply_id))


class UnknownRouteConsumer(AsyncWebsocketConsumer):
    """Any other websocket path: refused, as a 404 would be, without an error in the log."""

    async def connect(self) -> None:
        await self.close()
