"""How far the database lags behind a streaming reply, and how soon a reply orphaned by a
killed process is marked interrupted, with the settings as configured (defaults unless set).

    .venv/bin/python -m bench.durability            # SQLite scratch database
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m bench.durability

It starts a local OpenAI-compatible server streaming a long reply, a daphne process, and a
websocket watcher; samples the stored text every 20 ms while the watcher records what arrived
live; then kills daphne with SIGKILL mid-reply, starts another, and times how long the open page
takes to show the reply as interrupted.
"""

import asyncio
import time

from bench.common import print_table, setup_django, signed_in_session

TOKENS = [f"t{n} " for n in range(600)]
TOKEN_DELAY = 0.02  # 50 tokens a second, a typical hosted model


async def measure_flush_lag(conversation, via, reply_id_holder: dict) -> dict:
    """Stream one reply; return the worst lag of the stored text behind the live text."""
    from asgiref.sync import sync_to_async

    from conversations.models import Message
    from tests.support.live import ReplyWatcher

    watcher = ReplyWatcher()
    live: list[tuple[float, int]] = []  # (time, characters received so far)
    stored: list[tuple[float, int]] = []

    async def sample_database(reply_id: str) -> None:
        while True:
            length = await sync_to_async(
                lambda: len(Message.objects.only("content").get(pk=reply_id).content)
            )()
            stored.append((time.monotonic(), length))
            await asyncio.sleep(0.02)

    async with via.websocket(conversation.pk) as socket:
        await asyncio.to_thread(via.post, f"/c/{conversation.pk}/messages/", {"text": "Go"})
        while not watcher.status:
            watcher.feed(await socket.recv())
        reply_id = next(iter(watcher.status))
        reply_id_holder["id"] = reply_id
        sampler = asyncio.create_task(sample_database(reply_id))
        while watcher.status.get(reply_id) == "streaming":
            watcher.feed(await socket.recv())
            live.append((time.monotonic(), len(watcher.text.get(reply_id, ""))))
        sampler.cancel()

    # For each database sample, how long ago the live text was already that long.
    worst_seconds = 0.0
    worst_chars = 0
    for sampled_at, length in stored:
        live_then = max((n for t, n in live if t <= sampled_at), default=0)
        worst_chars = max(worst_chars, live_then - length)
        reached = next((t for t, n in live if n >= live_then), sampled_at)
        caught_up = next((t for t, n in stored if n >= live_then and t >= sampled_at), None)
        if caught_up is not None:
            worst_seconds = max(worst_seconds, caught_up - reached)
    return {"worst_seconds": worst_seconds, "worst_chars": worst_chars, "samples": len(stored)}


def main() -> None:
    database_url = setup_django()
    from django.conf import settings
    from django.core.management import call_command

    from conversations.models import Conversation, Message
    from tests.support.fake_openai import FakeOpenAI, Reply
    from tests.support.live import ChatClient, Daphne, ReplyWatcher, watch_until_finished

    call_command("collectstatic", "--noinput", verbosity=0)
    user, session = signed_in_session("bench-durability@example.com")
    with FakeOpenAI(api_key="bench") as model:
        model.default = Reply(chunks=TOKENS, delay=TOKEN_DELAY)
        env = {
            "OPENAI_BASE_URL": model.base_url,
            "OPENAI_API_KEY": "bench",
            "CHAT_AUTO_TITLE": "0",
        }
        conversation = Conversation.objects.create(owner=user)
        with Daphne("bench-flush", **env) as daphne:
            holder: dict = {}
            lag = asyncio.run(measure_flush_lag(conversation, ChatClient(daphne, session), holder))

        crashed = Conversation.objects.create(owner=user)
        with Daphne("bench-doomed", **env) as doomed:
            ChatClient(doomed, session).post(f"/c/{crashed.pk}/messages/", {"text": "Go"})
            reply = None
            while reply is None or not reply.content:
                time.sleep(0.05)
                reply = crashed.messages.filter(role="assistant").first()
            time.sleep(1.5)
            doomed.kill()
            killed_at = time.monotonic()
        with Daphne("bench-survivor", **env) as survivor:
            via = ChatClient(survivor, session)

            async def watch() -> float:
                watcher = ReplyWatcher()
                async with via.websocket(crashed.pk, last=str(reply.pk)) as socket:
                    await watch_until_finished(socket, watcher, str(reply.pk), timeout=300)
                return time.monotonic()

            shown_at = asyncio.run(watch())
        reply.refresh_from_db()

    print_table(
        "Durability of a streaming reply",
        [
            ("database", database_url.split("://")[0]),
            ("channel layer", "redis" if settings.REDIS_URL else "in-memory"),
            ("reply", f"{len(TOKENS)} tokens, {TOKEN_DELAY * 1000:.0f} ms apart"),
            ("CHAT_FLUSH_SECONDS", f"{settings.CHAT_FLUSH_SECONDS}"),
            ("CHAT_STALE_SECONDS", f"{settings.CHAT_STALE_SECONDS}"),
            ("stored text behind live, worst", f"{lag['worst_seconds']:.2f} s"),
            ("  ... in characters, worst", f"{lag['worst_chars']}"),
            ("  database samples", f"{lag['samples']}"),
            ("kill -9 to 'interrupted' on an open page", f"{shown_at - killed_at:.1f} s"),
            ("status after the crash", reply.status),
            ("stored prefix kept", f"{len(reply.content)} characters"),
        ],
    )
    assert Message.objects.get(pk=holder["id"]).status == "complete"


if __name__ == "__main__":
    main()
