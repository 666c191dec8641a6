"""What one user may ask of the model: tokens per day, and replies at once.

Every reply has an entry in the usage ledger (`UsageEntry`). `reserve` writes it in the
transaction that stores the reply (`generation._store_turn`, `_store_regeneration`: sending,
editing, regenerating, the pages and the API alike), under a lock on the user's row, after
checking the user's limits against what is already spent *and* what replies in progress have
reserved. So concurrent sends see each other: on PostgreSQL the row lock orders them, on
SQLite every transaction begins with the database's write lock (`transaction_mode` IMMEDIATE
in chatsite/settings.py), which orders them the same way.

A reservation is an estimate: the tokens of what the model is sent (the context-window fit's
count, conversations/llm/context.py) plus CHAT_REPLY_RESERVE_TOKENS for the reply. `settle` replaces
it when the reply ends, however it ends: with the provider's figures when they came, otherwise
with an estimate from the text that arrived. The stale-reply sweeper settles the replies of a
process that died (`settle_ended`).

The limits:
- the daily quota: a user's own (set in the admin) wins over CHAT_DAILY_TOKEN_QUOTA; 0 means no
  limit. A reply is refused once the day's tokens, spent and reserved, reach the quota. The
  reply admitted last may end above it, by at most its own cost. The day is a calendar day in
  TIME_ZONE: the quota resets at the next midnight there.
- CHAT_MAX_REPLIES_PER_USER replies streaming at once, counted in the database, whichever
  processes write them; 0 means no cap.
"""

import math
import uuid
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import F, Q
from django.utils import formats, timezone
from django.utils.timesince import timeuntil

from conversations import usage
from conversations.llm import context, providers
from conversations.models import Message, UsageEntry, stale_streaming_cutoff


class UserLimitReached(Exception):
    """A refusal for this user's own limits: nothing was stored or sent to the model."""

    message: str
    retry_after: int


class QuotaExceeded(UserLimitReached):
    """The user has spent, or reserved, their tokens for today."""

    def __init__(self, used: int, quota: int, resets_at: datetime, reserved: int = 0) -> None:
        self.used, self.quota, self.resets_at, self.reserved = used, quota, resets_at, reserved
        super().__init__(self.message)

    @property
    def message(self) -> str:
        local = timezone.localtime(self.resets_at, timezone.get_default_timezone())
        when = formats.date_format(local, "j F Y, H:i")
        held = (
            f" {self.reserved:,} of them are held for replies still being written; what they "
            "do not use comes back when they finish."
            if self.reserved
            else ""
        )
        return (
            f"You have reached your daily limit: {self.used:,} of {self.quota:,} tokens used "
            f"today.{held} It resets at midnight ({when} {local.tzname()}), in "
            f"{timeuntil(self.resets_at)}. Your message was not sent."
        )

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil((self.resets_at - timezone.now()).total_seconds()))


class TooManyReplies(UserLimitReached):
    """The user has CHAT_MAX_REPLIES_PER_USER replies streaming already."""

    retry_after = 10

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(self.message)

    @property
    def message(self) -> str:
        replies = "reply" if self.limit == 1 else "replies"
        return (
            f"You already have {self.limit} {replies} being written, the most one account may "
            "have at once. Wait for one to finish, or stop one. Your message was not sent."
        )


def quota_for(user) -> int:
    """Tokens the user may spend per day; 0 is no limit."""
    if user.daily_token_quota is not None:
        return user.daily_token_quota
    return settings.CHAT_DAILY_TOKEN_QUOTA


def next_reset() -> datetime:
    return usage.start_of_day(usage.today() + timedelta(days=1))


def _check_quota(user, user_id: int) -> None:
    quota = quota_for(user)
    if not quota:
        return
    spent, reserved = usage.tokens_on(user_id, usage.today())
    if spent + reserved >= quota:
        raise QuotaExceeded(spent + reserved, quota, next_reset(), reserved)


def check_quota_sync(user_id: int) -> None:
    """Raise QuotaExceeded when the user's tokens for today are spent or reserved: an early
    answer for a request that would otherwise create something first (`reserve` decides)."""
    user = get_user_model().objects.only("daily_token_quota").get(pk=user_id)
    _check_quota(user, user_id)


check_quota = database_sync_to_async(check_quota_sync)


def reserve(reply: Message, history: list[dict[str, str]], owner_id: int) -> None:
    """Admit `reply` against its owner's limits and reserve its estimated cost in the ledger.

    Called inside the transaction that stores the reply: a refusal rolls the whole turn back.
    Raises TooManyReplies or QuotaExceeded.
    """
    # Estimated first: the lock below is held until the turn commits.
    prompt = _prompt_estimate(history, reply.metadata)
    user = get_user_model().objects.select_for_update().only("daily_token_quota").get(pk=owner_id)
    cap = settings.CHAT_MAX_REPLIES_PER_USER
    if cap:
        streaming = (
            Message.objects.filter(
                conversation__owner_id=owner_id,
                status=Message.Status.STREAMING,
                updated_at__gte=stale_streaming_cutoff(),  # a dead process's replies do not count
            )
            .exclude(pk=reply.pk)
            .count()
        )
        if streaming >= cap:
            raise TooManyReplies(cap)
    _check_quota(user, owner_id)
    completion = settings.CHAT_REPLY_RESERVE_TOKENS
    UsageEntry.objects.create(
        user_id=owner_id,
        created_at=reply.created_at,
        model=reply.metadata.get("model", ""),
        provider=reply.metadata.get("provider", ""),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        reply_id=reply.pk,
        conversation_id=reply.conversation_id,
        message=reply,
    )


def _prompt_estimate(history: list[dict[str, str]], recorded: dict) -> int:
    """The tokens of what the model will be sent: the count of the context-window fit."""
    window = providers.context_window(recorded.get("provider", ""), recorded.get("model", ""))
    room = settings.CHAT_REPLY_RESERVE_TOKENS
    return max(context.fit(history, window=window, reserve=room).needed_tokens - room, 0)


def settle(reply_id: uuid.UUID, text: str, status: str, metadata: dict) -> None:
    """Replace the reply's reservation with what it cost, when it ends however it ends.

    The provider's figures when it reported them. Otherwise an estimate: the reserved prompt
    estimate plus the tokens of the text that arrived, except for a reply that failed with no
    text at all, which the provider refused or never received and which costs nothing. A
    reported figure is final; an estimate is replaced by a later, better settlement (the
    sweeper settles a reply taken for dead, its generator may still finish it).
    """
    entries = UsageEntry.objects.filter(reply_id=reply_id).exclude(
        state=UsageEntry.State.SETTLED, source=UsageEntry.Source.REPORTED
    )
    settled = {"state": UsageEntry.State.SETTLED, "settled_at": timezone.now()}
    if metadata.get("model"):
        settled["model"] = metadata["model"]
    reported = metadata.get("usage") or {}
    if reported:
        prompt = int(reported.get("prompt_tokens") or 0)
        completion = int(reported.get("completion_tokens") or 0)
        entries.update(
            **settled,
            source=UsageEntry.Source.REPORTED,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=int(reported.get("total_tokens") or prompt + completion),
        )
    elif status == Message.Status.ERROR and not text:
        entries.update(**settled, prompt_tokens=0, completion_tokens=0, total_tokens=0)
    else:
        completion = context.estimate_tokens(text)
        entries.update(
            **settled,
            source=UsageEntry.Source.ESTIMATED,
            completion_tokens=completion,
            total_tokens=F("prompt_tokens") + completion,
        )


def settle_ended(reply_ids: list[uuid.UUID] | None = None) -> None:
    """Settle the reservations of replies that ended without settling them: marked interrupted
    by the sweeper (their process died or stalled), or deleted with it. Only those of
    `reply_ids` when given; every one otherwise."""
    if reply_ids is not None and not reply_ids:
        return
    ended = UsageEntry.objects.filter(state=UsageEntry.State.RESERVED).filter(
        Q(message__isnull=True) | ~Q(message__status=Message.Status.STREAMING)
    )
    if reply_ids is not None:
        ended = ended.filter(reply_id__in=reply_ids)
    # Deleted with their text: the reservations stand as the estimates, in one statement.
    ended.filter(message__isnull=True).update(
        state=UsageEntry.State.SETTLED, settled_at=timezone.now()
    )
    for reply_id, text, status, metadata in ended.filter(message__isnull=False).values_list(
        "reply_id", "message__content", "message__status", "message__metadata"
    ):
        settle(reply_id, text, status, metadata or {})
