"""Query count and server time of the pages, for a heavy user, or for a whole site.

    .venv/bin/python -m bench.pages                      # SQLite scratch database, local cache
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m bench.pages
    DATABASE_URL=postgres://.../chatsite_bench_pages .venv/bin/python -m bench.pages \\
        --users 10000 --messages 1000000

A user holds 10,000 conversations, one of them with 2,000 messages of realistic Markdown (code
blocks, lists, links). Each page is requested through Django's test client in this process
(the full middleware stack, no network): the first request with an empty cache, then the
median of the following ones. A second, small user shows that the query count does not grow.

With --users and --messages, the database holds a site instead (see `populate_site`): the
sidebar, a chat page and a search for a common and a rare word, for a typical user and for the
heaviest one. On PostgreSQL the site is loaded with COPY and kept for the next run, which
reuses it when it has the same size.
"""

import argparse
import itertools
import json
import random
import statistics
import time
import uuid
from dataclasses import dataclass
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


def heavy_user_pages() -> None:
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


TARGET_MS = 50
HEAVY_SHARE = 0.01  # of all messages, the heaviest user's
LONG_CONVERSATION = 2_000
COMMON_WORD = "python"
RARE_WORD = "zeppelin"  # one user in fifty, the typical one among them, asks about it
FUNCTION_WORDS = (
    "the a to of and is in it you that for on with this can be your as are or not use if from "
    "by an at but will have so do more when which all one"
).split()
TOPIC_WORDS = (
    "file function error data code model server value list table python query test page time "
    "example string number setting version question answer database request change system "
    "default build run install package import class method variable loop result output input "
    "type format option command line user name path image text window memory cache network"
).split()
SYLLABLES = "ba be bi bo bu da de di do ka ke ki ko la le li lo ma me mi mo na ne ni no ra re ri "
SYLLABLES += "ro sa se si so ta te ti to va ve vi vo za ze zo"


@dataclass
class Site:
    typical: object  # a user with about the average number of messages
    heavy: object  # the user with the most, among them one long conversation
    typical_chat: object
    heavy_chat: object
    made_in: float | None  # seconds, None when an earlier run's site was reused


def vocabulary() -> tuple[list[str], list[float]]:
    """Words and cumulative weights of a Zipf distribution: function words first, then words of
    the topic (COMMON_WORD among them), then a long tail of made-up words."""
    syllables = SYLLABLES.split()
    tail = sorted(
        {"".join(random.choices(syllables, k=random.randint(2, 4))) for _ in range(30_000)}
    )
    words = FUNCTION_WORDS + TOPIC_WORDS + [w for w in tail if w != RARE_WORD]
    return words, list(itertools.accumulate(1 / rank for rank in range(1, len(words) + 1)))


def sentence_pool(size: int = 50_000) -> list[str]:
    words, weights = vocabulary()
    pool = []
    for _ in range(size):
        drawn = random.choices(words, cum_weights=weights, k=random.randint(6, 18))
        pool.append(" ".join(drawn).capitalize() + ".")
    return pool


def message_text(pool: list[str], role: str, serial: int) -> str:
    if role == "user":
        return random.choice(pool)[:-1] + "?"
    paragraphs = [" ".join(random.choices(pool, k=random.randint(1, 3))) for _ in range(2)]
    if serial % 5 == 0:
        paragraphs.insert(1, "```python\nresult = run(example, option=True)\n```")
    if serial % 7 == 0:
        paragraphs.append("- " + "\n- ".join(random.choices(pool, k=3)))
    return "\n\n".join(paragraphs)


def message_counts(users: int, messages: int) -> list[int]:
    """Messages per user: the first holds HEAVY_SHARE of them, the others the rest, from half
    to one and a half times the average."""
    heavy = max(LONG_CONVERSATION * 2, int(messages * HEAVY_SHARE))
    average = (messages - heavy) / (users - 1)
    counts = [heavy] + [max(2, int(average * random.uniform(0.5, 1.5))) for _ in range(users - 1)]
    counts[1] = max(2, round(average))  # the typical user
    counts[-1] += messages - sum(counts)
    return counts


def populate_site(users: int, messages: int) -> Site:
    """`users` users and `messages` messages, loaded with COPY, indexes built afterwards; the
    same site is reused by the next run. Each user has conversations of 2 to 40 messages
    (the heaviest also one of LONG_CONVERSATION), replies of two to six sentences and now
    and then code or a list, one reply in forty regenerated (its earlier version kept)."""
    from django.db import connection

    from accounts.models import User
    from conversations.models import Conversation, Message

    if User.objects.count() != users or Message.objects.count() != messages:
        random.seed(10)
        started = time.perf_counter()
        _load_site(users, messages)
        made_in = time.perf_counter() - started
    else:
        made_in = None
    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")  # as a production server would run these short queries
    ordered = User.objects.order_by("id")
    heavy, typical = ordered[0], ordered[1]

    def longest(user: User) -> Conversation:
        return max(Conversation.objects.filter(owner=user), key=lambda c: c.messages.count())

    return Site(typical, heavy, longest(typical), longest(heavy), made_in)


def _load_site(users: int, messages: int) -> None:
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import User
    from conversations.models import Conversation, Message

    conversation_table, message_table = Conversation._meta.db_table, Message._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {User._meta.db_table} CASCADE")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN (%s, %s) "
            "AND indexname NOT LIKE '%%pkey'",
            [conversation_table, message_table],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    password = "!"  # unusable: the pages are requested with force_login
    User.objects.bulk_create(
        [User(email=f"user{n}@bench.example", password=password) for n in range(users)],
        batch_size=5_000,
    )
    user_ids = list(User.objects.order_by("id").values_list("id", flat=True))
    pool = sentence_pool()
    now = timezone.now()
    conversation_rows, message_rows = [], []
    serial = 0
    assistant_meta = json.dumps({"model": "bench", "usage": {"total_tokens": 99}})
    for index, (user_id, count) in enumerate(
        zip(user_ids, message_counts(users, messages), strict=True)
    ):
        lengths = [LONG_CONVERSATION] if index == 0 else []
        while sum(lengths) < count:
            lengths.append(min(random.randint(1, 20) * 2, count - sum(lengths)))
        for length in lengths:
            conversation_id = uuid.uuid4()
            moment = now - timedelta(days=random.uniform(0, 180))
            title = " ".join(random.choice(pool).split()[:5]).rstrip(".")
            conversation_rows.append([conversation_id, user_id, title, moment])
            written = 0
            while written < length:
                role = "user" if written % 2 == 0 else "assistant"
                serial += 1
                text = message_text(pool, role, serial)
                if written == 2 and index % 50 == 1 and role == "user":
                    text = f"{text} What about the {RARE_WORD}?"
                moment += timedelta(seconds=30)
                message_id = uuid.uuid4()
                meta = assistant_meta if role == "assistant" else "{}"
                if role == "assistant" and serial % 40 == 0 and written + 1 < length:
                    earlier = message_text(pool, role, serial + 1)
                    message_rows.append(
                        [uuid.uuid4(), conversation_id, role, earlier, moment, meta, message_id]
                    )
                    written += 1
                    moment += timedelta(seconds=5)
                message_rows.append([message_id, conversation_id, role, text, moment, meta, None])
                written += 1
            conversation_rows[-1].append(moment)
    with transaction.atomic(), connection.cursor() as cursor:
        # The rows are consistent by construction: skip the foreign-key triggers.
        cursor.execute("SET LOCAL session_replication_role = replica")
        with cursor.cursor.copy(
            f"COPY {conversation_table} (id, owner_id, title, created_at, updated_at, metadata) "
            "FROM STDIN"
        ) as copy:
            for conversation_id, user_id, title, created, updated in conversation_rows:
                copy.write_row((conversation_id, user_id, title, created, updated, "{}"))
        with cursor.cursor.copy(
            f"COPY {message_table} (id, conversation_id, role, content, status, created_at, "
            "updated_at, metadata, superseded_by_id) FROM STDIN"
        ) as copy:
            for message_id, conversation_id, role, text, moment, meta, replaced in message_rows:
                copy.write_row(
                    (
                        message_id,
                        conversation_id,
                        role,
                        text,
                        "complete",
                        moment,
                        moment,
                        meta,
                        replaced,
                    )
                )
    with connection.cursor() as cursor:
        for _, definition in indexes:
            cursor.execute(definition)
        cursor.execute(f"VACUUM ANALYZE {conversation_table}")
        cursor.execute(f"VACUUM ANALYZE {message_table}")


def site_pages(users: int, messages: int) -> None:
    database_url = setup_django()
    from django.conf import settings
    from django.test import Client

    from conversations.models import Message
    from conversations.search import search

    if not database_url.startswith("postgres"):
        raise SystemExit("--users and --messages need DATABASE_URL=postgres://...")
    site = populate_site(users, messages)
    site_users = (site.typical, site.heavy)
    settings.ALLOWED_HOSTS = ["testserver"]
    typical_count = Message.objects.filter(conversation__owner=site.typical).count()
    heavy_count = Message.objects.filter(conversation__owner=site.heavy).count()
    made = "reused" if site.made_in is None else f"made in {site.made_in:.0f} s"
    print(
        f"\n{users:,} users, {messages:,} messages ({made}); typical user: {typical_count:,} "
        f"messages, heaviest: {heavy_count:,}, the longest conversation {LONG_CONVERSATION:,}"
    )
    for word in (COMMON_WORD, RARE_WORD):
        found = [search(user.pk, word).messages.paginator.count for user in site_users]
        print(
            f"'{word}' is in {found[0]:,} of the typical user's messages, "
            f"{found[1]:,} of the heaviest's"
        )
    pages = [
        ("sidebar + new chat", "/", "/"),
        ("chat page", site.typical_chat.get_absolute_url(), site.heavy_chat.get_absolute_url()),
        (f"search '{COMMON_WORD}' (common)", f"/search/?q={COMMON_WORD}", None),
        (f"search '{RARE_WORD}' (rare)", f"/search/?q={RARE_WORD}", None),
    ]
    header = ("page", "typical p50", "x target", "heaviest p50", "x target", "queries")
    rows = [header]
    for label, typical_path, heavy_path in pages:
        figures = []
        for user, path in [(site.typical, typical_path), (site.heavy, heavy_path or typical_path)]:
            client = Client()
            client.force_login(user)
            figures.append(measure(client, path))
        typical, heavy = figures
        rows.append(
            (
                label,
                f"{typical['median_ms']:.1f} ms",
                f"{typical['median_ms'] / TARGET_MS:.2f}",
                f"{heavy['median_ms']:.1f} ms",
                f"{heavy['median_ms'] / TARGET_MS:.2f}",
                f"{typical['queries']} / {heavy['queries']}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(f"p50 of {RUNS} requests each, server time; x target: p50 / {TARGET_MS} ms\n")
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__)
    parser.add_argument("--users", type=int, help="a site of this many users (PostgreSQL)")
    parser.add_argument("--messages", type=int, help="and this many messages in all")
    arguments = parser.parse_args()
    if arguments.users or arguments.messages:
        site_pages(arguments.users or 10_000, arguments.messages or 1_000_000)
    else:
        heavy_user_pages()


if __name__ == "__main__":
    main()
