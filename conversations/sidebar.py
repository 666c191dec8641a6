"""The sidebar's list of conversations: pinned ones first, then the rest by recency, grouped
(Today, Previous 7 days, Older) in the site's time zone and paged with a keyset cursor.

A page costs two queries however many conversations the user has: the pinned ones (first page
only) and one keyset page of the others, read from the partial index `conversation_sidebar`.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from conversations.models import Conversation

PAGE_SIZE = 50
PINNED = "Pinned"
TODAY = "Today"
PREVIOUS_7_DAYS = "Previous 7 days"
OLDER = "Older"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIDEBAR_FIELDS = ("id", "title", "updated_at", "pinned_at")


class BadCursor(ValueError):
    """A `?after=` value that no sidebar page ever handed out."""


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the last conversation's (updated_at, id), newest first."""

    updated_at: datetime
    id: uuid.UUID

    def __str__(self) -> str:
        microseconds = (self.updated_at - _EPOCH) // timedelta(microseconds=1)
        return f"{microseconds}.{self.id.hex}"

    @classmethod
    def parse(cls, value: str) -> "Cursor":
        try:
            microseconds, hex_id = value.split(".")
            return cls(_EPOCH + timedelta(microseconds=int(microseconds)), uuid.UUID(hex=hex_id))
        except (ValueError, OverflowError) as error:
            raise BadCursor(value) from error


@dataclass
class SidebarPage:
    """Conversations to list, each with `group_heading` set where a new group starts."""

    items: list[Conversation] = field(default_factory=list)
    next_cursor: Cursor | None = None


def _day_starts(now: datetime) -> tuple[datetime, datetime]:
    today = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return today, today - timedelta(days=7)


def recency_group(updated_at: datetime, now: datetime | None = None) -> str:
    """Today, Previous 7 days or Older, by calendar days in the current time zone."""
    today, week_ago = _day_starts(now or timezone.now())
    if updated_at >= today:
        return TODAY
    if updated_at >= week_ago:
        return PREVIOUS_7_DAYS
    return OLDER


def sidebar_page(
    owner_id: int, after: Cursor | None = None, *, page_size: int | None = None
) -> SidebarPage:
    """One page of the owner's sidebar: the first one (`after` None) starts with the pinned
    conversations; archived ones are never listed."""
    page_size = page_size or PAGE_SIZE
    now = timezone.now()
    listed = Conversation.objects.filter(owner_id=owner_id, archived_at__isnull=True).only(
        *_SIDEBAR_FIELDS
    )
    items: list[Conversation] = []
    previous_group = None
    if after is None:
        for item in listed.filter(pinned_at__isnull=False).order_by("-pinned_at", "-id"):
            item.group_heading = PINNED if previous_group is None else ""
            previous_group = PINNED
            items.append(item)
    else:
        previous_group = recency_group(after.updated_at, now)
    recent = listed.filter(pinned_at__isnull=True).order_by("-updated_at", "-id")
    if after is not None:
        # (updated_at, id) < the cursor's, with a plain bound on updated_at for the index to
        # start its range scan from.
        recent = recent.filter(updated_at__lte=after.updated_at).filter(
            Q(updated_at__lt=after.updated_at) | Q(id__lt=after.id)
        )
    rows = list(recent[: page_size + 1])
    for item in rows[:page_size]:
        group = recency_group(item.updated_at, now)
        item.group_heading = group if group != previous_group else ""
        previous_group = group
        items.append(item)
    page = SidebarPage(items=items)
    if len(rows) > page_size:
        last = rows[page_size - 1]
        page.next_cursor = Cursor(last.updated_at, last.id)
    return page
