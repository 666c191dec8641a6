"""chatsite.asgi:application with the change docs/performance.md proposes, applied from outside
so that it can be measured before it is made in conversations/generation.py:

    .venv/bin/python -m bench.concurrency --app bench.proposed_asgi:application

A generation runs in a fresh context (it outlives the request that started it), so the
thread-sensitive `database_sync_to_async` sends the database calls of every generation of the
process to one and the same thread. With hundreds of replies streaming, their flushes (one a
second each) queue there; the heartbeat they carry falls behind CHAT_STALE_SECONDS and the sweeper
marks live replies interrupted. Here the generation's own calls, which no request awaits and each
of which is a unit of work of its own, run on the default thread pool instead.
"""

from channels.db import database_sync_to_async

from chatsite.asgi import application
from conversations import generation

for name in ("_history", "_flush", "_finish"):
    setattr(
        generation,
        name,
        database_sync_to_async(getattr(generation, name).func, thread_sensitive=False),
    )

__all__ = ["application"]
