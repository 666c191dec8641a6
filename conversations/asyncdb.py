"""Database work from async code that belongs to no request: generations and sockets."""

from collections.abc import Callable

from channels.db import database_sync_to_async


def in_worker_thread(func: Callable) -> Callable:
    """Run a self-contained database function in a worker thread, closing its connection after.

    Not "thread-sensitive": asgiref would otherwise run it in the one thread that serves sync
    middleware for requests. A view awaiting work done that way would wait on its own thread
    (a deadlock), and every reply and socket of the process would queue behind each other.
    Each function opens and commits its own transaction, so any thread will do.
    """
    return database_sync_to_async(func, thread_sensitive=False)
