"""The actions on a conversation as a whole: create, rename, pin, archive, delete. After each,
every open page of the owner gets its new sidebar over the websocket."""

import uuid

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.replies import announce, stop


async def new_conversation(owner, metadata: dict, title: str) -> Conversation:
    """The row of a new conversation with `metadata` (its model and settings), named `title`
    if given, announced to no one yet."""
    if title:
        metadata = {**metadata, "title_source": "user"}  # the model does not rename it
    return await Conversation.objects.acreate(owner=owner, title=title, metadata=metadata)


async def do_create_conversation(owner, metadata: dict, *, title: str = "") -> Conversation:
    """An empty conversation (the API's; the pages start one with its first message)."""
    conversation = await new_conversation(owner, metadata, title)
    await announce.sidebar_changed(owner.pk)
    return conversation


async def streaming_replies(conversation: Conversation) -> list[uuid.UUID]:
    """The conversation's replies being written, newest first (one, but for a moment)."""
    replies = Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
    return [pk async for pk in replies.order_by("-created_at").values_list("pk", flat=True)]


def do_rename_conversation(conversation: Conversation, title: str) -> None:
    """Name the conversation `title` (as RenameForm cleans it), for good: the model does not
    rename it after a reply. The row is locked, as the automatic title locks it
    (replies/titles.py), so neither overwrites the other's change with a stale copy."""
    with transaction.atomic():
        locked = get_object_or_404(Conversation.objects.select_for_update(), pk=conversation.pk)
        locked.title = title
        locked.metadata["title_source"] = "user"
        locked.save(update_fields=["title", "metadata"])
    conversation.title, conversation.metadata = locked.title, locked.metadata
    announce.sidebar_changed_sync(conversation.owner_id)
    announce.title_changed_sync(conversation.pk)


def _set_state(conversation: Conversation, **changes) -> None:
    for name, value in changes.items():
        setattr(conversation, name, value)
    conversation.save(update_fields=list(changes))
    announce.sidebar_changed_sync(conversation.owner_id)


def do_pin_conversation(conversation: Conversation) -> None:
    """Keep it at the top of the sidebar; a pinned conversation is not archived."""
    _set_state(conversation, pinned_at=timezone.now(), archived_at=None)


def do_unpin_conversation(conversation: Conversation) -> None:
    _set_state(conversation, pinned_at=None)


def do_archive_conversation(conversation: Conversation) -> None:
    """Move it out of the sidebar, to the archive; an archived conversation is not pinned."""
    _set_state(conversation, archived_at=timezone.now(), pinned_at=None)


def do_unarchive_conversation(conversation: Conversation) -> None:
    _set_state(conversation, archived_at=None)


async def do_delete_conversation(conversation: Conversation) -> None:
    """Stop any reply being written, then delete the conversation and all its messages."""
    for reply_id in await streaming_replies(conversation):
        await stop.request_stop(reply_id)
    await conversation.adelete()
    await announce.sidebar_changed(conversation.owner_id)
