"""When code that waits on the network holds a database connection: as briefly as it can.

Generations and websocket consumers query as units of work of their own (`unit_of_work`);
requests give their connection back before they wait (`release_connection`).
"""

import functools

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import close_old_connections, connection


def unit_of_work(function):
    """Run `function` on the default thread pool, not on the one thread of sync_to_async.

    Outside a request there is no per-request thread: a thread-sensitive call from a generation
    (a task of its own, which outlives the request that started it) or from a websocket consumer
    goes to one thread shared by the whole process. With hundreds of replies streaming, their
    flushes queued there and heartbeats fell behind CHAT_STALE_SECONDS; with hundreds of pages
    open, every page's connect, catch-up, new turn and finished reply queued behind the others.
    Each call so decorated is a unit of work of its own that holds no connection afterwards.

    A request awaits it only after `release_connection()`: until then the request holds the
    connection of its session and user lookups, and waiting there for a second one, taken in
    another thread, can run the pool dry.
    """

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            # Inside the call's own context: the pool's threads come and go with event loops,
            # and a connection left open on one that ended would never go back to the pool.
            close_old_connections()

    return database_sync_to_async(call, thread_sensitive=False)


def _release() -> None:
    if connection.vendor != "sqlite" and not connection.in_atomic_block:
        connection.close()


async def release_connection() -> None:
    """Give the calling request's database connection back before it waits on anything else.

    A request keeps the connection of its first query (its session, its user) until its
    response ends: for a streaming response, the whole reply. Called where a request is done
    with the database and is about to wait on the model, the channel layer or its client, so
    that a process serves any number of replies with a handful of pooled connections. A later
    query of the same request simply takes one again. SQLite's connection to its file is no
    scarce resource and is kept; inside a transaction (a test's) nothing is closed.
    """
    # Thread-sensitive: the request's own thread, where its connection lives.
    await sync_to_async(_release)()
