"""The daily token quota: checked once, before the model is asked for anything.

`generation.begin` and `generation.regenerate` call `check_quota`, so every way of asking for a
reply (the chat page, regenerate, edit, the API) is held to it. A user's own quota (set in the
admin) wins over the site's CHAT_DAILY_TOKEN_QUOTA; 0 means no limit. The day is a calendar day
in TIME_ZONE: the quota resets at the next midnight there.
"""

from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import formats, timezone
from django.utils.timesince import timeuntil

from . import usage


class QuotaExceeded(Exception):
    """The user has spent their tokens for today; nothing was stored or sent to the model."""

    def __init__(self, used: int, quota: int, resets_at: datetime) -> None:
        self.used, self.quota, self.resets_at = used, quota, resets_at
        super().__init__(self.message)

    @property
    def message(self) -> str:
        local = timezone.localtime(self.resets_at, timezone.get_default_timezone())
        when = formats.date_format(local, "j F Y, H:i")
        return (
            f"You have reached your daily limit: {self.used:,} of {self.quota:,} tokens used "
            f"today. It resets at midnight ({when} {local.tzname()}), in "
            f"{timeuntil(self.resets_at)}. Your message was not sent."
        )


def quota_for(user) -> int:
    """Tokens the user may spend per day; 0 is no limit."""
    if user.daily_token_quota is not None:
        return user.daily_token_quota
    return settings.CHAT_DAILY_TOKEN_QUOTA


def next_reset() -> datetime:
    return usage.start_of_day(usage.today() + timedelta(days=1))


def check_quota_sync(user_id: int) -> None:
    """Raise QuotaExceeded when the user has used their tokens for today."""
    user = get_user_model().objects.only("daily_token_quota").get(pk=user_id)
    quota = quota_for(user)
    if not quota:
        return
    used = usage.tokens_used_on(user_id, usage.today())
    if used >= quota:
        raise QuotaExceeded(used, quota, next_reset())


check_quota = database_sync_to_async(check_quota_sync)
