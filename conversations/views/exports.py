"""Downloads of a user's data: one conversation as Markdown or JSON, or everything as JSON.

A conversation's JSON and each conversation in the full export have the same shape: its own
fields, then every message, earlier versions included and marked `"current": false`. Fields
are read from the models, so a field added to a model later is exported too.
"""

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from conversations.access import get_conversation_for_user
from conversations.models import Conversation, Message, ShareLink

EXPORT_FORMAT = "chatsite-export"
EXPORT_VERSION = 1
# Account fields never exported, whatever else the user model holds: any named like a secret
# (a "daily_token_quota" is not one, a "reset_token" would be).
SECRET_FIELD_ENDINGS = ("password", "secret", "token", "key")
ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System"}


class ExportEncoder(DjangoJSONEncoder):
    """Django's encoder, but times keep their microseconds: versions of a message made in the
    same millisecond still sort as they do here."""

    def default(self, o: object) -> object:
        if isinstance(o, datetime):
            return o.isoformat()
        return super().default(o)


def _fields(instance: Model, *, skip: Iterable[str] = ()) -> dict:
    """The instance's own columns, foreign keys by id, ready for ExportEncoder."""
    return {
        field.attname: field.value_from_object(instance)
        for field in instance._meta.concrete_fields
        if field.name not in skip and field.attname not in skip
    }


def message_data(message: Message) -> dict:
    data = _fields(message, skip=("conversation",))
    data["current"] = message.superseded_by_id is None
    return data


def conversation_data(conversation: Conversation, messages: Iterable[Message]) -> dict:
    data = _fields(conversation, skip=("owner",))
    data["messages"] = [message_data(message) for message in messages]
    return data


def account_data(user: Model) -> dict:
    secret = [
        field.name
        for field in user._meta.concrete_fields
        if field.name.endswith(SECRET_FIELD_ENDINGS)
    ]
    data = _fields(user, skip=secret)
    data["email_addresses"] = list(
        user.emailaddress_set.order_by("email").values("email", "verified", "primary")
    )
    return data


def _filename(conversation: Conversation, extension: str) -> str:
    slug = slugify(conversation.display_title)[:60] or "conversation"
    return f"chatsite-{slug}-{conversation.pk.hex[:8]}.{extension}"


def _download(content: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def _timestamp(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def conversation_markdown(conversation: Conversation, messages: Iterable[Message]) -> str:
    """The title, then each message under a heading naming its author and time."""
    lines = [f"# {conversation.display_title}", ""]
    for message in messages:
        author = ROLE_HEADINGS.get(message.role, message.role)
        model = message.metadata.get("model") if message.role == Message.Role.ASSISTANT else None
        heading = f"## {author}" + (f" ({model})" if model else "")
        lines += [f"{heading} · {_timestamp(message.created_at)}", ""]
        lines += [message.content.rstrip("\n"), ""]
        if message.status != Message.Status.COMPLETE:
            lines += [f"*{message.get_status_display()}*", ""]
    return "\n".join(lines)


def _current(conversation: Conversation):
    return conversation.messages.filter(superseded_by__isnull=True).order_by("created_at", "pk")


@login_required
@require_GET
def export_markdown(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The conversation as it stands, as a Markdown file."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    markdown = conversation_markdown(conversation, _current(conversation).iterator())
    return _download(markdown, "text/markdown", _filename(conversation, "md"))


@login_required
@require_GET
def export_json(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    """The conversation with every message and its metadata, earlier versions included."""
    conversation = get_conversation_for_user(request.user, conversation_id)
    messages = conversation.messages.order_by("created_at", "pk").iterator()
    data = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": timezone.now(),
        "conversation": conversation_data(conversation, messages),
    }
    content = json.dumps(data, cls=ExportEncoder, indent=2, ensure_ascii=False)
    return _download(content, "application/json", _filename(conversation, "json"))


def _json(value: object) -> str:
    return json.dumps(value, cls=ExportEncoder, ensure_ascii=False)


async def _everything(user: Model) -> AsyncIterator[str]:
    """The user's data as JSON, written as it is read: three queries whatever its size
    (the account, its conversations, all their messages), each read in chunks."""
    header = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "exported_at": timezone.now()}
    yield _json(header)[:-1]
    yield ', "account": ' + _json(await sync_to_async(account_data)(user))
    shares = [
        _fields(share, skip=("token",))
        async for share in ShareLink.objects.filter(conversation__owner=user).order_by("pk")
    ]
    yield ', "share_links": ' + _json(shares)
    yield ', "conversations": ['
    # Conversations and messages are both read in conversation-id order and merged.
    messages = (
        Message.objects.filter(conversation__owner=user)
        .order_by("conversation_id", "created_at", "pk")
        .aiterator(chunk_size=500)
    )
    pending: Message | None = await anext(messages, None)
    first = True
    async for conversation in Conversation.objects.filter(owner=user).order_by("pk").aiterator():
        own: list[Message] = []
        # Ids compare in Python as they sort in the database; skipping lets messages of a
        # conversation created while the export runs not hold up the rest.
        while pending is not None and pending.conversation_id < conversation.pk:
            pending = await anext(messages, None)
        while pending is not None and pending.conversation_id == conversation.pk:
            own.append(pending)
            pending = await anext(messages, None)
        yield ("" if first else ", ") + _json(conversation_data(conversation, own))
        first = False
    yield "]}\n"


@login_required
@require_GET
async def export_all(request: HttpRequest) -> StreamingHttpResponse:
    """Everything the signed-in user has here, as one JSON file: the account (no password),
    every conversation and every message, earlier versions included."""
    user = await request.auser()
    response = StreamingHttpResponse(
        _everything(user), content_type="application/json; charset=utf-8"
    )
    day = timezone.now().strftime("%Y-%m-%d")
    response["Content-Disposition"] = content_disposition_header(
        True, f"chatsite-export-{day}.json"
    )
    return response
