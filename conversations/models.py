import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

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


def new_share_token() -> str:
    return secrets.token_urlsafe(32)


class ShareLink(models.Model):
    """A read-only public link to a conversation as it stood when the link was made.

    The link keeps a copy of what it shows, its title and its messages, made when it was
    created: later messages, renames, regenerations and edits, and any text written to a
    message afterwards, stay with the owner. A reply still being written is never copied.

    The token is kept as it is, not hashed: whoever can read this table can read the
    conversation itself, so a hash would protect nothing, and the owner can copy the link
    again at any time. 32 random bytes make it unguessable.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="share_links"
    )
    token = models.CharField(max_length=64, unique=True, default=new_share_token, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # What the link shows, copied when it was made; emptied when it is revoked.
    title = models.CharField(max_length=TITLE_MAX_LENGTH, blank=True)
    # The messages current then, oldest first: [{"id", "role", "status", "content"}, ...].
    snapshot = models.JSONField(default=list, blank=True)

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

    @classmethod
    def snapshot_of(cls, conversation: Conversation) -> "ShareLink":
        """A new link to the conversation as it stands: its title and a copy of its current
        messages, but for a reply still being written."""
        current = (
            conversation.messages.filter(superseded_by__isnull=True)
            .exclude(status=Message.Status.STREAMING)
            .order_by("created_at")
            .values_list("pk", "role", "status", "content")
        )
        return cls.objects.create(
            conversation=conversation,
            title=conversation.title,
            snapshot=[
                {"id": str(pk), "role": role, "status": status, "content": content}
                for pk, role, status, content in current
            ],
        )

    @property
    def display_title(self) -> str:
        return self.title or "New chat"

    def messages(self) -> list[Message]:
        """The copied messages as (unsaved) Messages, for a template to show."""
        return [
            Message(
                id=uuid.UUID(entry["id"]),
                conversation_id=self.conversation_id,
                role=entry["role"],
                status=entry["status"],
                content=entry["content"],
            )
            for entry in self.snapshot
        ]


class UsageEntry(models.Model):
    """What one reply cost: the ledger the daily quota and the usage pages add up.

    It outlives the conversation (the references go NULL, `reply_id` stays): deleting a chat
    does not give its tokens back. An entry is reserved, with an estimate, in the transaction
    that stores the reply, so concurrent sends see each other's cost at once; it is settled
    when the reply ends, however it ends, with the provider's figures when they came and an
    estimate from the text otherwise (conversations/replies/quota.py).
    """

    class State(models.TextChoices):
        RESERVED = "reserved", "Reserved"
        SETTLED = "settled", "Settled"

    class Source(models.TextChoices):
        ESTIMATED = "estimated", "Estimated"
        REPORTED = "reported", "Reported by the provider"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_entries"
    )
    # When the reply was asked for: the day it counts towards, in TIME_ZONE.
    created_at = models.DateTimeField(default=timezone.now)
    model = models.TextField(blank=True)
    provider = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RESERVED)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ESTIMATED)
    settled_at = models.DateTimeField(null=True, blank=True)
    # The reply it paid for, kept when the reply is deleted: a late settlement still finds it.
    reply_id = models.UUIDField(unique=True, null=True, blank=True)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "usage entries"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "created_at"], name="usage_user_day"),
            models.Index(fields=["created_at"], name="usage_period"),
            models.Index(
                fields=["created_at"],
                name="usage_reserved",
                condition=models.Q(state="reserved"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.total_tokens} tokens ({self.state}, {self.source})"
