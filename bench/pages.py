"""Query count and server time of the pages, for a heavy user.

    .venv/bin/python -m bench.pages                      # SQLite scratch database, local cache
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m bench.pages

A user holds 10,000 conversations, one of them with 2,000 messages of realistic Markdown (code
blocks, lists, links). Each page is requested through Django's test client in this process
(the full middleware stack, no network): the first request with an empty cache, then the
median of the following ones. A second, small user shows that the query count does not grow.
"""

import statistics
import time
from datetime import timedelta

from bench.common import print_table, setup_django

CONVERSATIONS = 10_000
MESSAGES = 2_000
RUNS = 15

REPLY = """Here is how to do it:

1. Install the package with `pip install example`.
2. Configure it in **settings.py**:

```python
EXAMPLE = {"enabled": True, "level": 3}
```

3. Read [the documentation](https://example.com/docs) for the details.

| option | default |
|---|---|
| enabled | False |
"""


def populate(email: str, conversations: int, messages: int):
    from django.utils import timezone

    from accounts.models import User
    from conversations.models import Conversation, Message

    user = User.objects.create_user(email, "bench-password-123")
    now = timezone.now()
    Conversation.objects.bulk_create(
        [
            Conversation(
                owner=user, title=f"Conversation {n}", updated_at=now - timedelta(minutes=n)
            )
            for n in range(conversations)
        ],
        batch_size=2000,
    )
    # A few pinned (they head the sidebar) and archived (they leave it) among them.
    Conversation.objects.filter(
        owner=user, title__in=["Conversation 7", "Conversation 4000"]
    ).update(pinned_at=now)
    Conversation.objects.filter(owner=user, title__endswith="00").update(archived_at=now)
    long_one = Conversation.objects.create(owner=user, title="The long one", updated_at=now)
    Message.objects.bulk_create(
        [
            Message(
                conversation=long_one,
                role="user" if n % 2 == 0 else "assistant",
                content=f"Question {n}: how do I configure it?" if n % 2 == 0 else REPLY,
                created_at=now - timedelta(seconds=messages - n),
                metadata={} if n % 2 == 0 else {"model": "bench", "usage": {"total_tokens": 99}},
            )
            for n in range(messages)
        ],
        batch_size=1000,
    )
    return user, long_one


def measure(client, path: str) -> dict:
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    cache.clear()
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as cold_queries:
        response = client.get(path)
    cold = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as queries:
            client.get(path)
        times.append(time.perf_counter() - started)
    return {
        "queries": len(queries),
        "cold_queries": len(cold_queries),
        "cold_ms": cold * 1000,
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": sorted(times)[int(len(times) * 0.9) - 1] * 1000,
        "bytes": len(response.content),
    }


def main() -> None:
    database_url = setup_django()
    from django.conf import settings
    from django.test import Client

    started = time.perf_counter()
    heavy, long_one = populate("heavy@example.com", CONVERSATIONS, MESSAGES)
    light, short_one = populate("light@example.com", 3, 4)
    populated = time.perf_counter() - started
    settings.ALLOWED_HOSTS = ["testserver"]
    from conversations.sidebar import sidebar_page

    later_page = f"/conversations/?after={sidebar_page(heavy.pk).next_cursor}"
    deep_cursor = sidebar_page(heavy.pk, page_size=9_000).next_cursor
    deep_page = f"/conversations/?after={deep_cursor}"

    rows = [
        ("database", database_url.split("://")[0]),
        ("cache", settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]),
        (
            "data",
            f"{CONVERSATIONS:,} conversations, one of {MESSAGES:,} messages "
            f"(made in {populated:.1f} s)",
        ),
    ]
    for label, user, path in [
        ("sidebar + new chat, heavy user", heavy, "/"),
        ("sidebar + new chat, light user", light, "/"),
        ("sidebar, 2nd page (keyset), heavy user", heavy, later_page),
        ("sidebar, page after 9,000, heavy user", heavy, deep_page),
        ("search 'configure', heavy user", heavy, "/search/?q=configure"),
        (f"chat page, {MESSAGES:,} messages", heavy, long_one.get_absolute_url()),
        ("chat page, 4 messages", light, short_one.get_absolute_url()),
    ]:
        client = Client()
        client.force_login(user)
        figures = measure(client, path)
        rows.append(
            (
                label,
                f"{figures['queries']} queries (cold: {figures['cold_queries']}), "
                f"median {figures['median_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, "
                f"cold {figures['cold_ms']:.1f} ms, {figures['bytes'] / 1024:.0f} KiB",
            )
        )
    print_table("Pages of a heavy user (Django test client, in process)", rows)


if __name__ == "__main__":
    main()
