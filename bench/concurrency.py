"""Concurrency: N conversations streaming at once through one server process (or several).

    .venv/bin/python -m bench.concurrency                          # 100, 500, 1000 on one daphne
    .venv/bin/python -m bench.concurrency --streams 1000 --server uvicorn
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m bench.concurrency
    DATABASE_URL=... REDIS_URL=... .venv/bin/python -m bench.concurrency --servers 2

Without DATABASE_URL and REDIS_URL it runs on a scratch SQLite database and the in-memory channel
layer (one process only); `--servers 2` needs both, as production does.

For each N, with fresh server processes and a fresh fake model (bench.upstream, its own process):
1. N users, each signed in with one conversation, open the chat websocket of that conversation
   (at most 100 handshakes in flight). Resident memory of the server before and after: memory per
   open connection; then its CPU over 5 quiet seconds: what open pages cost.
2. Every user POSTs a message (at most 100 requests in flight, as 100 browsers would). The model
   answers each request with a reply of its own, `--tokens` tokens `--delay` seconds apart. CPU time
   of the server process over the whole phase (requests, generation, relaying, database writes)
   divided by the tokens streamed: CPU per streamed token.
3. Checks, for every conversation: the reply is stored complete; the text the page ends with (the
   final rendering of the reply) equals it; it is one of the model's scripted replies, no two
   conversations the same; the user's message is stored as sent. Anything else counts as lost.
   Reported besides: pages whose streamed text differed from the reply until the final rendering
   replaced it, and replies shown interrupted before they completed (frames of a first case of
   each are written to test-artifacts/).
Gaps between tokens are the times between consecutive websocket frames that added reply text, as
this process received them. With `--servers 2` each user's websocket goes to one process and the
POST to the other (as a round-robin proxy may do): generation runs in one, the page is in the other.

The load generator (this process), the fake model and the servers share the machine's cores: the
table shows the CPU each used, and what other processes on the machine took meanwhile.
"""

import argparse
import asyncio
import contextlib
import html
import re
import time
import uuid
from dataclasses import dataclass, field

import httpx2

from bench.common import print_table, setup_django
from bench.servers import (
    LOGS,
    SERVERS,
    AppServer,
    Browser,
    CpuMeter,
    SignedIn,
    Upstream,
    csrf_token,
    delete_users,
    describe_backends,
    percentile,
    signed_in_users,
    use_uvloop,
)
from bench.upstream import scripted_text

DELTA_PREFIX = '<div hx-swap-oob="beforeend:'
IN_FLIGHT = 100
IDLE_SECONDS = 5


FINAL = {"complete", "error", "stopped"}
_MARKDOWN = re.compile(r'<div class="message-body markdown">(.*?)</div>', re.S)


@dataclass
class Stream:
    person: SignedIn
    socket_server: AppServer
    post_server: AppServer
    message: str
    frames: list[tuple[float, str]] = field(default_factory=list)
    shown_interrupted: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    connect_seconds: float = 0.0
    posted_at: float = 0.0
    post_status: int = 0
    post_content_type: str = ""
    post_seconds: float = 0.0
    error: str = ""


@dataclass
class Outcome:
    """What one stream delivered, rebuilt from its frames after the run."""

    reply_id: str | None
    status: str | None
    text: str  # as streamed, before the final rendering
    final_text: str  # the words of the final rendering (Markdown), what the page ends with
    text_times: list[float]


def rebuild(stream: Stream) -> Outcome:
    from tests.support.live import ReplyWatcher

    watcher = ReplyWatcher()
    text_times = []
    for received_at, frame in stream.frames:
        before = sum(map(len, watcher.text.values()))
        watcher.feed(frame)
        if sum(map(len, watcher.text.values())) > before:
            text_times.append(received_at)
    replies = list(watcher.status)
    if len(replies) != 1:
        return Outcome(None, None, "", "", text_times)
    reply_id = replies[0]
    rendered = _MARKDOWN.findall(stream.frames[-1][1]) if stream.frames else []
    final_text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", "".join(rendered))).split())
    return Outcome(
        reply_id, watcher.status[reply_id], watcher.text.get(reply_id, ""), final_text, text_times
    )


async def watch(stream: Stream, socket) -> None:
    """Keep every frame with its arrival time; stop once the reply is shown finished.

    Deltas are only stored here (parsing them all as they arrive would cost this process the
    CPU it needs to keep up); the other, rare frames are checked for the end of the reply. A
    reply shown interrupted may still finish (the page then shows it complete): watching goes on.
    """
    from tests.support.live import ReplyWatcher

    watcher = ReplyWatcher()
    try:
        async for frame in socket:
            stream.frames.append((time.monotonic(), frame))
            if not frame.startswith(DELTA_PREFIX):
                watcher.feed(frame)
                statuses = set(watcher.status.values())
                stream.shown_interrupted |= "interrupted" in statuses
                if statuses & FINAL:
                    break
    except Exception as error:
        stream.error = f"websocket: {error!r}"
    stream.finished.set()


async def post(stream: Stream, browser: Browser, gate: asyncio.Semaphore) -> None:
    async with gate:
        stream.posted_at = time.monotonic()
        try:
            response = await browser.post(
                f"/c/{stream.person.conversation_id}/messages/", {"text": stream.message}
            )
            stream.post_status = response.status_code
            stream.post_content_type = response.headers.get("content-type", "")
        except httpx2.HTTPError as error:
            stream.error = f"POST: {error!r}"
            stream.finished.set()
        except asyncio.CancelledError:
            stream.error = "POST: not answered before the deadline"
            raise
        stream.post_seconds = time.monotonic() - stream.posted_at


async def sample_rss(servers: list[AppServer], peak: dict[str, int]) -> None:
    while True:
        peak["rss"] = max(peak["rss"], sum(server.rss_bytes() for server in servers))
        await asyncio.sleep(0.2)


async def warm_up(http: httpx2.AsyncClient, servers, people: list[SignedIn], csrf: str) -> None:
    """One whole reply per server, so that nothing measured pays for first-use costs."""
    for server, person in zip(servers, people, strict=True):
        stream = Stream(person, server, server, "Warm up")
        browser = Browser(http, server, person.session_key, csrf)
        async with browser.websocket(person.conversation_id) as socket:
            watcher = asyncio.create_task(watch(stream, socket))
            await post(stream, browser, asyncio.Semaphore(1))
            await asyncio.wait_for(watcher, 120)
        if rebuild(stream).status != "complete":
            raise RuntimeError(f"warm-up reply failed on {server.url}: {stream.error}")


async def run_level(
    servers: list[AppServer], upstream: Upstream, streams: list[Stream], warm: list[SignedIn]
) -> dict:
    limits = httpx2.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    figures: dict = {}
    async with httpx2.AsyncClient(timeout=300, limits=limits) as http:
        csrf = await csrf_token(http, servers[0])
        await warm_up(http, servers, warm, csrf)
        await asyncio.sleep(1)
        figures["rss_before"] = sum(server.rss_bytes() for server in servers)

        gate = asyncio.Semaphore(IN_FLIGHT)
        sockets: list = [None] * len(streams)

        async def connect(number: int, stream: Stream) -> None:
            browser = Browser(http, stream.socket_server, stream.person.session_key, csrf)
            async with gate:
                started = time.monotonic()
                try:
                    sockets[number] = await browser.websocket(stream.person.conversation_id)
                except Exception as error:
                    stream.error = f"connect: {error!r}"
                    stream.finished.set()
                stream.connect_seconds = time.monotonic() - started

        started = time.monotonic()
        await asyncio.gather(*(connect(n, stream) for n, stream in enumerate(streams)))
        figures["connect_wall"] = time.monotonic() - started
        await asyncio.sleep(1)
        figures["rss_connected"] = sum(server.rss_bytes() for server in servers)
        # What open but quiet pages cost: nothing streams yet.
        with CpuMeter({f"server {n + 1}": server for n, server in enumerate(servers)}) as idle:
            await asyncio.sleep(IDLE_SECONDS)
        figures["idle_cpu"] = sum(idle.used[f"server {n + 1}"] for n in range(len(servers)))

        watchers = [
            asyncio.create_task(watch(stream, socket))
            for stream, socket in zip(streams, sockets, strict=True)
            if socket is not None
        ]
        peak = {"rss": figures["rss_connected"]}
        sampler = asyncio.create_task(sample_rss(servers, peak))
        processes = {f"server {n + 1}": server for n, server in enumerate(servers)}
        with CpuMeter({**processes, "fake model": upstream}) as meter:
            started = time.monotonic()
            posts = [
                asyncio.create_task(
                    post(
                        stream,
                        Browser(http, stream.post_server, stream.person.session_key, csrf),
                        gate,
                    )
                )
                for stream in streams
                if not stream.error
            ]
            deadline = upstream.tokens * upstream.delay + 60 + 0.05 * len(streams)
            waiting = [asyncio.create_task(stream.finished.wait()) for stream in streams]
            _, late = await asyncio.wait(waiting, timeout=deadline)
            figures["stream_wall"] = time.monotonic() - started
            for task in [*late, *posts]:
                task.cancel()
            await asyncio.gather(*posts, return_exceptions=True)
        sampler.cancel()
        figures["rss_peak"] = peak["rss"]
        figures["cpu"] = meter
        figures["server_cpu"] = sum(meter.used[name] for name in processes)
        for task in watchers:
            task.cancel()
        await asyncio.gather(
            *(socket.close() for socket in sockets if socket is not None), return_exceptions=True
        )
    return figures


def verify(streams: list[Stream], outcomes: list[Outcome], scripted: set[str]) -> dict:
    """Compare what each browser received with the database and with what the model sent."""
    from conversations.models import Message

    replies = {
        str(message.conversation_id): message
        for message in Message.objects.filter(
            conversation_id__in=[stream.person.conversation_id for stream in streams],
            role=Message.Role.ASSISTANT,
        )
    }
    questions = {
        str(conversation_id): content
        for conversation_id, content in Message.objects.filter(
            conversation_id__in=[stream.person.conversation_id for stream in streams],
            role=Message.Role.USER,
        ).values_list("conversation_id", "content")
    }
    seen: set[str] = set()
    problems: dict[str, int] = {}
    examples: list[str] = []

    def problem(kind: str) -> None:
        problems[kind] = problems.get(kind, 0) + 1
        if problems[kind] == 1:
            shown = outcome.text
            kept = stored.content if stored else ""
            same = next(
                (n for n, (a, b) in enumerate(zip(shown, kept, strict=False)) if a != b),
                min(len(shown), len(kept)),
            )
            dump = LOGS / f"bench-concurrency-{conversation_id}.frames"
            dump.write_text(
                "".join(f"{at - stream.posted_at:9.3f} {frame!r}\n" for at, frame in stream.frames)
            )
            examples.append(
                f"{kind}: conversation {conversation_id}, reply {outcome.reply_id}: shown "
                f"{len(shown)} characters ({outcome.status}), stored {len(kept)} "
                f"({stored.status if stored else None}), alike for the first {same}; "
                f"{stream.error or 'no client error'}; frames in {dump}"
            )

    exact = 0
    for stream, outcome in zip(streams, outcomes, strict=True):
        conversation_id = stream.person.conversation_id
        stored = replies.get(conversation_id)
        if stream.error:
            problem(stream.error.split(":")[0] + " error")
        elif stream.post_status != 200:
            problem(f"POST HTTP {stream.post_status}")
        elif questions.get(conversation_id) != stream.message:
            problem("user message not stored as sent")
        elif stored is None or str(stored.pk) != outcome.reply_id:
            problem("no reply stored, or a reply of another conversation shown")
        elif stored.status != Message.Status.COMPLETE or outcome.status != "complete":
            problem(f"reply {stored.status} (shown {outcome.status})")
        elif outcome.final_text != " ".join(stored.content.split()):
            problem("text shown differs from text stored")
        elif stored.content not in scripted:
            problem("text stored differs from what the model sent")
        elif stored.content in seen:
            problem("two conversations got the same reply")
        else:
            seen.add(stored.content)
            exact += 1
            if outcome.text != stored.content:
                problem("streamed text differed from the reply until the final rendering")
            if stream.shown_interrupted:
                problem("shown interrupted, then complete")
    return {"exact": exact, "problems": problems, "examples": examples}


def peak_concurrency(outcomes: list[Outcome]) -> int:
    events = []
    for outcome in outcomes:
        if outcome.text_times:
            events += [(outcome.text_times[0], 1), (outcome.text_times[-1], -1)]
    running = peak = 0
    for _, change in sorted(events, key=lambda event: (event[0], -event[1])):
        running += change
        peak = max(peak, running)
    return peak


def measure(args, count: int, database: str) -> dict:
    prefix = f"bench-concurrency-{uuid.uuid4().hex[:8]}"
    people = signed_in_users(count + args.servers, prefix)
    warm, people = people[: args.servers], people[args.servers :]
    try:
        with Upstream(tokens=args.tokens, delay=args.delay, unique=count + len(warm)) as upstream:
            with contextlib.ExitStack() as stack:
                servers = [
                    stack.enter_context(
                        AppServer(args.server, upstream, args.app, **args.server_env)
                    )
                    for _ in range(args.servers)
                ]
                streams = [
                    Stream(
                        person,
                        servers[number % len(servers)],
                        servers[(number + 1) % len(servers)],
                        f"Question {number} from {person.conversation_id}",
                    )
                    for number, person in enumerate(people)
                ]
                figures = asyncio.run(run_level(servers, upstream, streams, warm))
        outcomes = [rebuild(stream) for stream in streams]
        scripted = {scripted_text(index, args.tokens) for index in range(count + len(warm))}
        figures.update(verify(streams, outcomes, scripted))
    finally:
        delete_users(prefix, [*warm, *people])
    gaps = [
        later - earlier
        for outcome in outcomes
        for earlier, later in zip(outcome.text_times, outcome.text_times[1:], strict=False)
    ]
    ttft = [
        outcome.text_times[0] - stream.posted_at
        for stream, outcome in zip(streams, outcomes, strict=True)
        if outcome.text_times
    ]
    figures.update(
        count=count,
        gaps=gaps or [float("nan")],
        ttft=ttft or [float("nan")],
        post_seconds=[stream.post_seconds for stream in streams if stream.post_status],
        refusals=[
            (stream.post_status, stream.post_content_type)
            for stream in streams
            if stream.post_status and not 200 <= stream.post_status < 300
        ],
        connect_seconds=[stream.connect_seconds for stream in streams],
        peak_concurrency=peak_concurrency(outcomes),
        tokens=figures["exact"] * args.tokens,
        frames=sum(len(outcome.text_times) for outcome in outcomes),
    )
    return figures


def table_rows(results: list[dict], args) -> list[tuple[str, str]]:
    def row(name: str, value) -> tuple[str, str]:
        return name, "".join(f"{value(result):>16}" for result in results)

    def mib(value: float) -> str:
        return f"{value / 2**20:.1f} MiB"

    def kib(value: float) -> str:
        return f"{value / 2**10:.0f} KiB"

    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms"

    def share(r: dict, name: str) -> str:
        return f"{r['cpu'].used[name] / r['cpu'].wall:.0%}"

    def per_count(r: dict, later: str, earlier: str) -> float:
        return (r[later] - r[earlier]) / r["count"]

    servers = args.servers
    return [
        row("streams", lambda r: f"{r['count']}"),
        row("complete and exact", lambda r: f"{r['exact']}"),
        row("lost or wrong", lambda r: f"{r['count'] - r['exact']}"),
        row("peak concurrent streams", lambda r: f"{r['peak_concurrency']}"),
        row("websocket connect, p99", lambda r: ms(percentile(r["connect_seconds"], 0.99))),
        row("POST answered, p50", lambda r: ms(percentile(r["post_seconds"], 0.5))),
        row("POST answered, p99", lambda r: ms(percentile(r["post_seconds"], 0.99))),
        row("first token, p50", lambda r: ms(percentile(r["ttft"], 0.5))),
        row("first token, p99", lambda r: ms(percentile(r["ttft"], 0.99))),
        row("token gap, p50", lambda r: ms(percentile(r["gaps"], 0.5))),
        row("token gap, p99", lambda r: ms(percentile(r["gaps"], 0.99))),
        row("token gap, max", lambda r: ms(max(r["gaps"]))),
        row("tokens per frame", lambda r: f"{r['tokens'] / max(1, r['frames']):.2f}"),
        row("streaming phase", lambda r: f"{r['stream_wall']:.1f} s"),
        row("tokens/s, all streams", lambda r: f"{r['tokens'] / r['stream_wall']:.0f}"),
        row("RSS before sockets", lambda r: mib(r["rss_before"])),
        row("RSS per open socket", lambda r: kib(per_count(r, "rss_connected", "rss_before"))),
        row(
            "server CPU, sockets idle",
            lambda r: f"{r['idle_cpu'] / IDLE_SECONDS / servers:.0%} of {servers} core",
        ),
        row("RSS peak, streaming", lambda r: mib(r["rss_peak"])),
        row("RSS per stream", lambda r: kib(per_count(r, "rss_peak", "rss_connected"))),
        row(
            "server CPU per token",
            lambda r: f"{r['server_cpu'] / max(1, r['tokens']) * 1e6:.0f} µs",
        ),
        row(
            "server CPU, mean",
            lambda r: f"{r['server_cpu'] / r['cpu'].wall / servers:.0%} of {servers} core",
        ),
        row("load generator CPU", lambda r: share(r, "load generator")),
        row("fake model CPU", lambda r: share(r, "fake model")),
        row("other processes CPU", lambda r: share(r, "other processes")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__)
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--servers", type=int, default=1, help="server processes")
    parser.add_argument("--server", choices=SERVERS, default="daphne")
    parser.add_argument(
        "--app", default="chatsite.asgi:application", help="ASGI application the servers run"
    )
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--delay", type=float, default=0.25, help="seconds between tokens")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the server processes, e.g. CHAT_DELTA_BATCH_SECONDS=0.1",
    )
    args = parser.parse_args()
    args.server_env = dict(setting.split("=", 1) for setting in args.env)

    database_url = setup_django()
    from django.conf import settings
    from django.core.management import call_command

    if args.servers > 1 and not (settings.REDIS_URL and database_url.startswith("postgres")):
        parser.error("several processes share state through PostgreSQL and Redis: set both")
    call_command("collectstatic", "--noinput", verbosity=0)
    loop_name = use_uvloop()
    database, layer = describe_backends()
    results = [measure(args, count, database) for count in args.streams]
    problems = {kind: n for result in results for kind, n in result["problems"].items()}
    rows = [
        ("server", f"{args.server}, {args.servers} process{'es' if args.servers > 1 else ''}"),
        ("database, channel layer", f"{database}, {layer}"),
        ("reply", f"{args.tokens} tokens, {args.delay * 1000:g} ms apart (upstream)"),
        ("load generator", f"this process ({loop_name}); model: bench.upstream process"),
        *([("server environment", " ".join(args.env))] if args.env else []),
        *([("application", args.app)] if args.app != "chatsite.asgi:application" else []),
        *table_rows(results, args),
    ]
    if problems:
        rows.append(("problems", ", ".join(f"{kind}: {n}" for kind, n in problems.items())))
    print_table(f"Concurrent streams ({args.server} x{args.servers})", rows)
    for example in (example for result in results for example in result["examples"]):
        print(f"  first case of {example}")


if __name__ == "__main__":
    main()
