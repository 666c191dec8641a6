import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .rendering import render_markdown_cached

TITLE_MAX_LENGTH = 200


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=TITLE_MAX_LENGTH, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Moves forward whenever the conversation gets a message: the sidebar sorts on it.
    updated_at = models.DateTimeField(default=timezone.now)
    # Settings of this conversation, such as {"model": "...", "system_prompt": "..."}.
    metadata = models.JSONField(default=dict, blank=True)
    # Pinned conversations head the sidebar; archived ones leave it for the archive page.
    pinned_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"], name="conversation_owner_recent"),
            # The sidebar's keyset pages, its pinned head and the archive page.
            models.Index(
                fields=["owner", "-updated_at", "-id"],
                name="conversation_sidebar",
                condition=models.Q(pinned_at__isnull=True, archived_at__isnull=True),
            ),
            models.Index(
                fields=["owner", "-pinned_at"],
                name="conversation_pinned",
                condition=models.Q(pinned_at__isnull=False, archived_at__isnull=True),
            ),
            models.Index(
                fields=["owner", "-archived_at", "-id"],
                name="conversation_archived",
                condition=models.Q(archived_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.display_title

    def get_absolute_url(self) -> str:
        return reverse("conversation", args=[self.id])

    @property
    def display_title(self) -> str:
        return self.title or "New chat"

    @property
    def system_prompt(self) -> str:
        return self.metadata.get("system_prompt") or settings.CHAT_SYSTEM_PROMPT

    @property
    def model_name(self) -> str:
        return self.metadata.get("model") or settings.CHAT_DEFAULT_MODEL


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        COMPLETE = "complete", "Complete"
        STREAMING = "streaming", "Streaming"
        ERROR = "error", "Error"
        STOPPED = "stopped", "Stopped"
        INTERRUPTED = "interrupted", "Interrupted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Touched by every flush of a streaming reply: a reply whose heartbeat stops is interrupted.
    updated_at = models.DateTimeField(default=timezone.now)
    # The fencing token of the generator writing a streaming reply: each of its writes names it,
    # and marking the reply interrupted clears it, so a generator taken for dead (its process
    # paused, say) never writes over what was decided meanwhile.
    lease = models.UUIDField(null=True, blank=True, editable=False)
    # What the model reported: model, usage (token counts), finish_reason, timings, error.
    metadata = models.JSONField(default=dict, blank=True)
    # Set when a regenerated reply or an edited message replaced this one: the earlier version is
    # kept (and shown on demand) but no longer part of the conversation the model sees.
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="earlier_versions"
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_conversation_order"),
            models.Index(
                fields=["conversation", "created_at"],
                name="message_current_order",
                condition=models.Q(superseded_by__isnull=True),
            ),
            models.Index(
                fields=["status", "updated_at"],
                name="message_streaming_heartbeat",
                condition=models.Q(status="streaming"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    @property
    def dom_id(self) -> str:
        return f"message-{self.id}"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    @property
    def usage(self) -> dict:
        return self.metadata.get("usage") or {}

    @property
    def error_text(self) -> str:
        return self.metadata.get("error", "")


def stale_streaming_cutoff():
    return timezone.now() - timedelta(seconds=settings.CHAT_STALE_SECONDS)


SIDEBAR_LIMIT = 50


class MessagePage(list):
    """A run of a conversation's current messages, oldest first, and whether older ones exist."""

    has_earlier: bool = False


def current_messages(
    conversation: Conversation, *, before: "Message | None" = None, limit: int | None = None
) -> MessagePage:
    """The conversation as it stands: its newest `limit` messages (all when None), or those
    before `before`, each carrying its earlier versions. Two queries whatever the length."""
    current = conversation.messages.filter(superseded_by__isnull=True)
    if before is not None:
        current = current.filter(created_at__lt=before.created_at)
    newest_first = current.order_by("-created_at")
    rows = list(newest_first if limit is None else newest_first[: limit + 1])
    page = MessagePage(reversed(rows[:limit] if limit is not None else rows))
    page.has_earlier = limit is not None and len(rows) > limit
    earlier: dict[uuid.UUID, list[Message]] = {}
    for old in Message.objects.filter(superseded_by__in=[m.pk for m in page]).order_by(
        "created_at"
    ):
        earlier.setdefault(old.superseded_by_id, []).append(old)
    for message in page:
        message.versions = earlier.get(message.pk, [])
    return page


def recent_conversations(owner_id: int, limit: int = SIDEBAR_LIMIT) -> list[Conversation]:
    """The owner's conversations, most recently active first, for the sidebar."""
    return list(
        Conversation.objects.filter(owner_id=owner_id)
        .only("id", "title", "updated_at")
        .order_by("-updated_at")[:limit]
    )


def new_share_token() -> str:
    return secrets.token_urlsafe(32)


class ShareLink(models.Model):
    """A read-only public link to a conversation as it stood when the link was made.

    The token is kept as it is, not hashed: whoever can read this table can read the
    conversation itself, so a hash would protect nothing, and the owner can copy the link
    again at any time. 32 random bytes make it unguessable.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="share_links"
    )
    token = models.CharField(max_length=64, unique=True, default=new_share_token, editable=False)
    # Also the moment of the snapshot: the link shows the messages that were current then.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["conversation"],
                name="sharelink_active",
                condition=models.Q(revoked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"Share of {self.conversation_id}"

    def get_absolute_url(self) -> str:
        return reverse("share", args=[self.token])

    def messages(self) -> list[Message]:
        """The conversation's messages as they stood when the link was made: each current
        then, even if regenerated or edited since; none added later."""
        moment = self.created_at
        current_then = models.Q(superseded_by__isnull=True) | models.Q(
            superseded_by__created_at__gt=moment
        )
        candidates = self.conversation.messages.filter(
            current_then, created_at__lte=moment
        ).order_by("created_at")
        # All versions replaced later by the same message are one place in the conversation;
        # the newest of them was the current one. Oldest first, so the newest stays.
        by_place: dict[uuid.UUID, Message] = {}
        for message in candidates:
            by_place[message.superseded_by_id or message.pk] = message
        shown = sorted(by_place.values(), key=lambda message: message.created_at)
        render_markdown_cached(shown)
        return shown
