"""The cap on the chat websockets a user holds open at once (CHAT_MAX_SOCKETS_PER_USER).

A user has that many numbered slots in Django's cache: Redis with REDIS_URL, so the cap holds
across processes; this process's memory otherwise. A socket takes a free slot with the cache's
atomic `add` and keeps it by renewing its expiry at each check of its session
(CHAT_SOCKET_RECHECK_SECONDS). The slots of a process killed with sockets open expire on their
own, after three checks missed: nobody is locked out for longer than that. A slot lost to the
cache (evicted, flushed) only makes the cap more lenient for a while.
"""

import math
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

TOO_MANY_SOCKETS_MESSAGE = (
    "Too many chat pages are open: this one no longer updates. "
    "Close some of them, then reload this page."
)


def _expiry_seconds() -> int:
    # Whole seconds: Redis expiries are.
    return max(1, math.ceil(3 * settings.CHAT_SOCKET_RECHECK_SECONDS))


def _slot_keys(user_id: int) -> list[str]:
    return [f"socket-slot:{user_id}:{n}" for n in range(settings.CHAT_MAX_SOCKETS_PER_USER)]


def _take_slot(user_id: int, token: str) -> str | None:
    keys = _slot_keys(user_id)
    taken = cache.get_many(keys)
    for key in keys:
        if key not in taken and cache.add(key, token, _expiry_seconds()):
            return key
    return None


class SocketSlot:
    """The slot one socket holds among its user's."""

    def __init__(self, user_id: int, key: str | None, token: str) -> None:
        self.user_id = user_id
        self.key = key
        self.token = token

    @classmethod
    async def take(cls, user_id: int) -> "SocketSlot | None":
        """A slot for a new socket of this user, or None when all are taken."""
        token = uuid.uuid4().hex
        if settings.CHAT_MAX_SOCKETS_PER_USER <= 0:
            return cls(user_id, None, token)  # no cap
        key = await sync_to_async(_take_slot, thread_sensitive=False)(user_id, token)
        return cls(user_id, key, token) if key else None

    async def keep(self) -> None:
        """Renew the slot's expiry; take one again if the cache lost it."""
        if self.key is not None:
            await sync_to_async(self._keep, thread_sensitive=False)()

    def _keep(self) -> None:
        if cache.get(self.key) == self.token:
            cache.touch(self.key, _expiry_seconds())
        else:
            self.key = _take_slot(self.user_id, self.token) or self.key

    async def release(self) -> None:
        if self.key is not None:
            await sync_to_async(self._release, thread_sensitive=False)()

    def _release(self) -> None:
        if cache.get(self.key) == self.token:
            cache.delete(self.key)
