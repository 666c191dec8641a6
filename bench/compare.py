"""Four ways to relay a model's stream, side by side: raw SDK, seed design, chatsite pages, API.

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_bench
    export REDIS_URL=redis://127.0.0.1:6379/0
    .venv/bin/python -m bench.compare                        # 1, 200 and 1000 concurrent replies
    .venv/bin/python -m bench.compare --streams 1,200 --server uvicorn --only seed,api
    .venv/bin/python -m bench.compare --servers 2            # chatsite on two processes

Runs on PostgreSQL and Redis only (the seed's database is made on the same PostgreSQL server).
For each N in `--streams`, each of the four is run against a fresh fake model (bench.upstream,
its own process, `--tokens` tokens `--delay` seconds apart, a reply of its own per request so
that every reply is checkable) and fresh server processes:
- raw SDK: N concurrent `AsyncOpenAI` streams from this process, the floor: no server at all;
- seed design: bench.seed under uvicorn, N concurrent POSTs reading the SSE `data:` lines;
- chatsite pages: bench.concurrency's run: N signed-in users each with the chat websocket of
  their conversation open, then N POSTs of a message, the reply read from the websocket;
- chatsite API: N concurrent `POST /api/v1/conversations/<id>/messages`, each with a personal
  API token, reading the SSE events (`start`, `delta`, `done`).
Before the measured replies, one whole reply per server process, unmeasured (first-use costs).
At most 100 requests or handshakes are in flight while starting (a request counts until the
headers of its answer arrive); each level ends within `tokens x delay + 60 s + 50 ms x N`.

Per path, in one table per N:
- complete and exact: the reply streamed is one of the model's, no two the same, and stored as
  streamed with the user's message as sent (the seed's in its database, chatsite's in its own);
- refused cleanly: for the seed and the API an HTTP 503 with a JSON body and `Retry-After`; for
  the pages any answer to the POST outside 2xx (with its status); lost or failed: all the rest,
  described under the table (HTTP statuses and the kind of body, or what went wrong);
- first token: from the request sent to the first reply text in hand, in this process;
- server CPU per token: CPU time of the server process(es) (from /proc) over the streaming
  phase, over the tokens of the complete and exact replies;
- memory: resident memory of the server(s) while all N are open (pages: before the POSTs) or
  streaming (the peak), less what it was before, divided by N;
- ratios to the seed design.
Then "one reply alone": the median time to first token of 15 sequential replies of each (after 3
unmeasured), taken in turn, with `--tokens` tokens 10 ms apart so that 60 replies take a minute,
not half an hour (the fake model waits `delay` before the first token too).

The load generator (this process), the fake model and the servers share the machine's cores:
under each table, the CPU each used meanwhile, as a share of one core.
"""

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx2
import openai

from bench import concurrency, relay, seed
from bench.common import print_table, setup_django
from bench.concurrency import IN_FLIGHT, sample_rss
from bench.servers import (
    SERVERS,
    AppServer,
    Browser,
    CpuMeter,
    Process,
    SeedServer,
    Upstream,
    api_keys,
    csrf_token,
    delete_users,
    describe_backends,
    percentile,
    signed_in_users,
    use_uvloop,
)
from bench.upstream import scripted_text

PATHS = {
    "sdk": "raw SDK",
    "seed": "seed design",
    "pages": "chatsite pages",
    "api": "chatsite API",
}
ALONE_RUNS = 15
ALONE_WARMUP_RUNS = 3
ALONE_DELAY = 0.01
COLUMN = 16


@dataclass
class Exchange:
    """One reply asked for (an HTTP POST, or a call of the SDK) and read to its end."""

    message: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    conversation_id: str = ""
    sent_at: float = 0.0
    first_text_at: float = 0.0
    status: int = 0
    content_type: str = ""
    retry_after: str | None = None
    parts: list[str] = field(default_factory=list)
    done: dict | None = None
    error: str = ""

    def add_text(self, text: str) -> None:
        if text and not self.first_text_at:
            self.first_text_at = time.monotonic()
        self.parts.append(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def refused_cleanly(self) -> bool:
        return self.status == 503 and "json" in self.content_type and bool(self.retry_after)


@dataclass
class Result:
    count: int
    exact: int
    refused: Counter
    failed: Counter
    ttft: list[float]
    tokens: int
    server_cpu: float | None = None
    rss_per_socket: float | None = None
    rss_per_stream: float | None = None
    shares: str = ""


def body_kind(content_type: str) -> str:
    if "json" in content_type:
        return "JSON"
    if "html" in content_type:
        return "HTML"
    return content_type.split(";")[0] or "no body"


def http_failure(status: int, content_type: str) -> str:
    return f"HTTP {status} ({body_kind(content_type)})"


def deadline_seconds(tokens: int, delay: float, count: int) -> float:
    return tokens * delay + 60 + 0.05 * count


# --------------------------------------------------------------------------- #
# Clients
# --------------------------------------------------------------------------- #


async def sse_events(response: httpx2.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each server-sent event; comments (keep-alives) are skipped."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def read_seed_event(exchange: Exchange, event: str, data: str) -> bool:
    """Take one of the seed's events; True once the reply is over."""
    if data == "[DONE]":
        exchange.done = {}
        return True
    exchange.add_text(json.loads(data)["text"])
    return False


def read_api_event(exchange: Exchange, event: str, data: str) -> bool:
    """Take one of chatsite's API events; True once the reply is over."""
    if event == "delta":
        exchange.add_text(json.loads(data)["text"])
    elif event == "done":
        exchange.done = json.loads(data)
        return True
    elif event == "error":
        exchange.error = f"event: error {data}"
        return True
    return False


async def post_sse(
    http: httpx2.AsyncClient,
    gate: asyncio.Semaphore,
    exchange: Exchange,
    read_event: Callable[[Exchange, str, str], bool],
) -> None:
    """POST the message, then read the answer's events until the reply is over."""
    try:
        async with gate:
            exchange.sent_at = time.monotonic()
            request = http.build_request(
                "POST", exchange.url, json={"content": exchange.message}, headers=exchange.headers
            )
            response = await http.send(request, stream=True)
        try:
            exchange.status = response.status_code
            exchange.content_type = response.headers.get("content-type", "")
            exchange.retry_after = response.headers.get("retry-after")
            if response.status_code != 200:
                await response.aread()
                return
            async for event, data in sse_events(response):
                if read_event(exchange, event, data):
                    break
        finally:
            await response.aclose()
    except httpx2.HTTPError as error:
        exchange.error = f"client: {type(error).__name__}"
    except asyncio.CancelledError:
        exchange.error = "not finished before the deadline"
        raise


async def through_sdk(
    client: openai.AsyncOpenAI, gate: asyncio.Semaphore, exchange: Exchange
) -> None:
    try:
        async with gate:
            exchange.sent_at = time.monotonic()
            stream = await client.chat.completions.create(
                model=seed.MODEL,
                messages=[{"role": "user", "content": exchange.message}],
                stream=True,
            )
        exchange.status = 200
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    exchange.add_text(chunk.choices[0].delta.content)
        exchange.done = {}
    except openai.APIStatusError as error:
        exchange.status = error.status_code
        exchange.content_type = error.response.headers.get("content-type", "")
    except openai.APIError as error:
        exchange.error = f"client: {type(error).__name__}"
    except asyncio.CancelledError:
        exchange.error = "not finished before the deadline"
        raise


Send = Callable[[asyncio.Semaphore, Exchange], Awaitable[None]]


async def stream_all(
    exchanges: list[Exchange],
    warm_ups: list[Exchange],
    send: Send,
    processes: dict[str, Process],
    upstream: Upstream,
) -> dict:
    """Warm up, then all exchanges at once: CPU and resident memory of `processes` meanwhile."""
    for warm in warm_ups:
        await send(asyncio.Semaphore(1), warm)
        if warm.done is None:
            raise RuntimeError(f"warm-up reply failed: HTTP {warm.status} {warm.error}")
    await asyncio.sleep(1)
    servers = list(processes.values())
    figures = {"rss_before": sum(server.rss_bytes() for server in servers)}
    peak = {"rss": figures["rss_before"]}
    sampler = asyncio.create_task(sample_rss(servers, peak))
    gate = asyncio.Semaphore(IN_FLIGHT)
    deadline = deadline_seconds(upstream.tokens, upstream.delay, len(exchanges))
    with CpuMeter({**processes, "fake model": upstream}) as meter:
        tasks = [asyncio.create_task(send(gate, exchange)) for exchange in exchanges]
        _, late = await asyncio.wait(tasks, timeout=deadline)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    figures.update(rss_peak=peak["rss"], cpu=meter)
    figures["server_cpu"] = sum(meter.used[name] for name in processes) if processes else None
    return figures


# --------------------------------------------------------------------------- #
# Checks
# --------------------------------------------------------------------------- #


def check(
    exchanges: list[Exchange],
    scripted: set[str],
    stored_problem: Callable[[Exchange], str | None],
) -> list[str | None]:
    """For each exchange, None if its reply is complete and exact, else what went wrong."""
    seen: set[str] = set()
    problems: list[str | None] = []
    for exchange in exchanges:
        text = exchange.text
        if exchange.error:
            problem = exchange.error
        elif exchange.status != 200:
            problem = http_failure(exchange.status, exchange.content_type)
        elif exchange.done is None:
            problem = "stream ended before the reply was over"
        elif text not in scripted:
            problem = "text differs from what the model sent"
        elif text in seen:
            problem = "two replies the same"
        else:
            problem = stored_problem(exchange)
        if problem is None:
            seen.add(text)
        problems.append(problem)
    return problems


def seed_stored_problem(stored: dict[tuple[str, str], list[str]]) -> Callable:
    def problem(exchange: Exchange) -> str | None:
        if stored.get((exchange.conversation_id, "user")) != [exchange.message]:
            return "user message not stored as sent"
        if stored.get((exchange.conversation_id, "assistant")) != [exchange.text]:
            return "reply stored differs from the reply streamed"
        return None

    return problem


def api_stored_problem(exchanges: list[Exchange]) -> Callable:
    from conversations.models import Message

    conversation_ids = [exchange.conversation_id for exchange in exchanges]
    stored = {
        (str(conversation_id), role): (content, status)
        for conversation_id, role, content, status in Message.objects.filter(
            conversation_id__in=conversation_ids
        ).values_list("conversation_id", "role", "content", "status")
    }

    def problem(exchange: Exchange) -> str | None:
        done = exchange.done or {}
        if done.get("status") != Message.Status.COMPLETE:
            return f"reply {done.get('status')} in `done`"
        if done.get("content") != exchange.text:
            return "text streamed differs from the reply in `done`"
        if stored.get((exchange.conversation_id, Message.Role.USER), ("",))[0] != exchange.message:
            return "user message not stored as sent"
        reply = stored.get((exchange.conversation_id, Message.Role.ASSISTANT))
        if reply != (exchange.text, Message.Status.COMPLETE):
            return "reply stored differs from the reply streamed"
        return None

    return problem


def result_of(
    exchanges: list[Exchange], problems: list[str | None], figures: dict, tokens: int
) -> Result:
    count = len(exchanges)
    refused, failed = Counter(), Counter()
    for exchange, problem in zip(exchanges, problems, strict=True):
        if problem is None:
            continue
        if exchange.refused_cleanly:
            refused[http_failure(exchange.status, exchange.content_type)] += 1
        else:
            failed[problem] += 1
    exact = problems.count(None)
    result = Result(
        count=count,
        exact=exact,
        refused=refused,
        failed=failed,
        ttft=[e.first_text_at - e.sent_at for e in exchanges if e.first_text_at],
        tokens=exact * tokens,
        server_cpu=figures["server_cpu"],
        shares=figures["cpu"].shares(),
    )
    if figures["server_cpu"] is not None:
        result.rss_per_stream = (figures["rss_peak"] - figures["rss_before"]) / count
    return result


# --------------------------------------------------------------------------- #
# The four paths at N concurrent replies
# --------------------------------------------------------------------------- #


def run_sdk(args, count: int) -> Result:
    exchanges = [Exchange(f"Question {n}") for n in range(count)]

    async def level(upstream: Upstream) -> dict:
        client = openai.AsyncOpenAI(
            base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0
        )
        try:

            async def send(gate: asyncio.Semaphore, exchange: Exchange) -> None:
                await through_sdk(client, gate, exchange)

            return await stream_all(exchanges, [Exchange("Warm up")], send, {}, upstream)
        finally:
            await client.close()

    with Upstream(tokens=args.tokens, delay=args.delay, unique=count + 1) as upstream:
        figures = asyncio.run(level(upstream))
    scripted = {scripted_text(index, args.tokens) for index in range(count + 1)}
    problems = check(exchanges, scripted, lambda exchange: None)
    return result_of(exchanges, problems, figures, args.tokens)


async def http_level(exchanges, warm_ups, read_event, processes, upstream) -> dict:
    limits = httpx2.Limits(
        max_connections=len(exchanges) + IN_FLIGHT, max_keepalive_connections=IN_FLIGHT
    )
    async with httpx2.AsyncClient(timeout=300, limits=limits) as http:

        async def send(gate: asyncio.Semaphore, exchange: Exchange) -> None:
            await post_sse(http, gate, exchange, read_event)

        return await stream_all(exchanges, warm_ups, send, processes, upstream)


def seed_exchange(server: SeedServer, conversation_id: str, message: str) -> Exchange:
    return Exchange(
        message,
        url=f"{server.url}/conversations/{conversation_id}/messages",
        headers={"Accept": "text/event-stream"},
        conversation_id=conversation_id,
    )


def run_seed(args, count: int) -> Result:
    seed.reset_database(args.database_url)
    warm_id, *conversation_ids = seed.create_conversations(args.database_url, count + 1)
    with (
        Upstream(tokens=args.tokens, delay=args.delay, unique=count + 1) as upstream,
        SeedServer(seed.database_url(args.database_url, "asyncpg"), upstream) as server,
    ):
        exchanges = [
            seed_exchange(server, conversation_id, f"Question {n} from {conversation_id}")
            for n, conversation_id in enumerate(conversation_ids)
        ]
        warm_ups = [seed_exchange(server, warm_id, "Warm up")]
        figures = asyncio.run(
            http_level(exchanges, warm_ups, read_seed_event, {"seed": server}, upstream)
        )
    stored = seed.stored_messages(args.database_url)
    scripted = {scripted_text(index, args.tokens) for index in range(count + 1)}
    problems = check(exchanges, scripted, seed_stored_problem(stored))
    return result_of(exchanges, problems, figures, args.tokens)


def api_exchange(server: AppServer, person, key: str, message: str) -> Exchange:
    return Exchange(
        message,
        url=f"{server.url}/api/v1/conversations/{person.conversation_id}/messages",
        headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"},
        conversation_id=person.conversation_id,
    )


def run_api(args, count: int) -> Result:
    prefix = f"bench-compare-api-{uuid.uuid4().hex[:8]}"
    people = signed_in_users(count + args.servers, prefix)
    keys = api_keys(people)
    try:
        with (
            Upstream(tokens=args.tokens, delay=args.delay, unique=count + args.servers) as upstream,
            contextlib.ExitStack() as stack,
        ):
            servers = [
                stack.enter_context(AppServer(args.server, upstream)) for _ in range(args.servers)
            ]
            warm_ups = [
                api_exchange(server, person, key, "Warm up")
                for server, person, key in zip(servers, people, keys, strict=False)
            ]
            exchanges = [
                api_exchange(
                    servers[n % len(servers)],
                    person,
                    key,
                    f"Question {n} from {person.conversation_id}",
                )
                for n, (person, key) in enumerate(
                    zip(people[len(servers) :], keys[len(servers) :], strict=True)
                )
            ]
            processes = {f"server {n + 1}": server for n, server in enumerate(servers)}
            figures = asyncio.run(
                http_level(exchanges, warm_ups, read_api_event, processes, upstream)
            )
        scripted = {scripted_text(index, args.tokens) for index in range(count + args.servers)}
        problems = check(exchanges, scripted, api_stored_problem(exchanges))
    finally:
        delete_users(prefix, people)
    return result_of(exchanges, problems, figures, args.tokens)


# The pages' own checks note these of replies that still ended complete and exact.
PAGE_NOTES = {
    "streamed text differed from the reply until the final rendering",
    "shown interrupted, then complete",
}


def run_pages(args, count: int) -> Result:
    options = argparse.Namespace(
        servers=args.servers,
        server=args.server,
        app="chatsite.asgi:application",
        server_env={},
        tokens=args.tokens,
        delay=args.delay,
    )
    figures = concurrency.measure(options, count, args.database)
    refused = Counter(http_failure(*refusal) for refusal in figures["refusals"])
    failed = Counter(
        {
            kind: n
            for kind, n in figures["problems"].items()
            if kind not in PAGE_NOTES and not kind.startswith("POST HTTP")
        }
    )
    return Result(
        count=count,
        exact=figures["exact"],
        refused=refused,
        failed=failed,
        ttft=[ttft for ttft in figures["ttft"] if ttft == ttft],
        tokens=figures["tokens"],
        server_cpu=figures["server_cpu"],
        rss_per_socket=(figures["rss_connected"] - figures["rss_before"]) / count,
        rss_per_stream=(figures["rss_peak"] - figures["rss_connected"]) / count,
        shares=figures["cpu"].shares(),
    )


RUNNERS = {"sdk": run_sdk, "seed": run_seed, "pages": run_pages, "api": run_api}


# --------------------------------------------------------------------------- #
# One reply alone
# --------------------------------------------------------------------------- #


async def alone_runs(args, upstream, seed_server, app, conversation_ids, people, keys) -> dict:
    """Time to first token of each path, one reply at a time, the paths taking turns."""
    ttft: dict[str, list[float]] = {path: [] for path in args.only}
    sdk = openai.AsyncOpenAI(base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0)
    alone = asyncio.Semaphore(1)
    async with httpx2.AsyncClient(timeout=60) as http:
        csrf = await csrf_token(http, app)
        for run in range(ALONE_WARMUP_RUNS + ALONE_RUNS):
            for path in args.only:
                if path == "sdk":
                    seconds = (await relay.through_sdk(sdk, args.tokens)).ttft
                elif path == "pages":
                    person = people[2 * run]
                    browser = Browser(http, app, person.session_key, csrf)
                    seconds = (await relay.through_app(browser, person, args.tokens)).ttft
                else:
                    if path == "seed":
                        exchange = seed_exchange(seed_server, conversation_ids[run], "Hello")
                        read_event = read_seed_event
                    else:
                        exchange = api_exchange(app, people[2 * run + 1], keys[run], "Hello")
                        read_event = read_api_event
                    await post_sse(http, alone, exchange, read_event)
                    if exchange.done is None or not exchange.first_text_at:
                        raise RuntimeError(f"{path}: reply failed: HTTP {exchange.status}")
                    seconds = exchange.first_text_at - exchange.sent_at
                if run >= ALONE_WARMUP_RUNS:
                    ttft[path].append(seconds)
    await sdk.close()
    return {path: statistics.median(values) for path, values in ttft.items()}


def run_alone(args) -> dict[str, float]:
    runs = ALONE_WARMUP_RUNS + ALONE_RUNS
    seed.reset_database(args.database_url)
    conversation_ids = seed.create_conversations(args.database_url, runs)
    prefix = f"bench-compare-alone-{uuid.uuid4().hex[:8]}"
    people = signed_in_users(2 * runs, prefix)
    keys = api_keys(people[1::2])
    try:
        with (
            Upstream(tokens=args.tokens, delay=ALONE_DELAY) as upstream,
            SeedServer(seed.database_url(args.database_url, "asyncpg"), upstream) as seed_server,
            AppServer(args.server, upstream) as app,
        ):
            return asyncio.run(
                alone_runs(args, upstream, seed_server, app, conversation_ids, people, keys)
            )
    finally:
        delete_users(prefix, people)


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


def kib(size: float | None) -> str:
    return "—" if size is None else f"{size / 2**10:.0f} KiB"


def ratio(value: float | None, anchor: float | None) -> str:
    if value is None or not anchor:
        return "—"
    return f"{value / anchor:.2f}x"


def cpu_per_token(result: Result) -> float | None:
    if result.server_cpu is None or not result.tokens:
        return None
    return result.server_cpu / result.tokens


def ttft_at(result: Result, fraction: float) -> float | None:
    return percentile(result.ttft, fraction) if result.ttft else None


def level_rows(results: dict[str, Result]) -> list[tuple[str, str]]:
    anchor = results.get("seed")

    def row(name: str, value: Callable[[Result], str]) -> tuple[str, str]:
        return name, "".join(f"{value(result):>{COLUMN}}" for result in results.values())

    def against_seed(measure: Callable[[Result], float | None]) -> Callable[[Result], str]:
        return lambda result: ratio(measure(result), measure(anchor) if anchor else None)

    def p50(result: Result) -> float | None:
        return ttft_at(result, 0.5)

    def p99(result: Result) -> float | None:
        return ttft_at(result, 0.99)

    def memory(result: Result) -> float | None:
        return result.rss_per_stream

    return [
        ("", "".join(f"{PATHS[path]:>{COLUMN}}" for path in results)),
        row("complete and exact", lambda r: f"{r.exact} of {r.count}"),
        row("refused cleanly", lambda r: f"{sum(r.refused.values())}"),
        row("lost or failed", lambda r: f"{sum(r.failed.values())}"),
        row("first token, p50", lambda r: ms(p50(r))),
        row("first token, p99", lambda r: ms(p99(r))),
        row("  p50 / seed", against_seed(p50)),
        row("  p99 / seed", against_seed(p99)),
        row(
            "server CPU per token",
            lambda r: "—" if cpu_per_token(r) is None else f"{cpu_per_token(r) * 1e6:.0f} µs",
        ),
        row("  / seed", against_seed(cpu_per_token)),
        row("RSS per open page socket", lambda r: kib(r.rss_per_socket)),
        row("RSS per streaming reply", lambda r: kib(r.rss_per_stream)),
        row("  / seed", against_seed(memory)),
    ]


def level_notes(results: dict[str, Result]) -> list[str]:
    notes = []
    for path, result in results.items():
        for label, kinds in (("refused", result.refused), ("lost or failed", result.failed)):
            if kinds:
                described = "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common())
                notes.append(f"  {PATHS[path]}, {label}: {described}")
    for path, result in results.items():
        notes.append(f"  CPU during {PATHS[path]} (share of one core): {result.shares}")
    return notes


def alone_rows(alone: dict[str, float]) -> list[tuple[str, str]]:
    anchor = alone.get("seed")

    def row(name: str, value: Callable[[float], str]) -> tuple[str, str]:
        return name, "".join(f"{value(seconds):>{COLUMN}}" for seconds in alone.values())

    return [
        ("", "".join(f"{PATHS[path]:>{COLUMN}}" for path in alone)),
        row(f"first token, median of {ALONE_RUNS}", lambda s: f"{s * 1000:.1f} ms"),
        row("  minus seed", lambda s: "—" if anchor is None else f"{(s - anchor) * 1000:+.1f} ms"),
        row("  / seed", lambda s: ratio(s, anchor)),
    ]


def comma_separated(choices: list[str] | None = None, convert: Callable = str) -> Callable:
    def parse(text: str) -> list:
        values = [convert(part.strip()) for part in text.split(",") if part.strip()]
        if choices and set(values) - set(choices):
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return values

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", type=comma_separated(convert=int), default=[1, 200, 1000])
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--delay", type=float, default=0.25, help="seconds between tokens")
    parser.add_argument("--server", choices=SERVERS, default="daphne", help="chatsite's server")
    parser.add_argument("--servers", type=int, choices=[1, 2], default=1, help="chatsite processes")
    parser.add_argument(
        "--only",
        type=comma_separated(list(PATHS)),
        default=list(PATHS),
        help="some of sdk,seed,pages,api",
    )
    args = parser.parse_args()
    args.only = [path for path in PATHS if path in args.only]
    if not (
        os.environ.get("DATABASE_URL", "").startswith("postgres") and os.environ.get("REDIS_URL")
    ):
        parser.error(
            "runs on PostgreSQL and Redis only: set DATABASE_URL and REDIS_URL, e.g. "
            "DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_bench "
            "REDIS_URL=redis://127.0.0.1:6379/0"
        )

    seed.create_database_if_missing(os.environ["DATABASE_URL"])
    args.database_url = setup_django()
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    loop_name = use_uvloop()
    database, layer = describe_backends()
    args.database = database
    print_table(
        "Relaying a model's stream: raw SDK, seed design, chatsite pages and API",
        [
            ("chatsite", f"{args.server}, {args.servers} process{'es' * (args.servers > 1)}"),
            ("seed design", "bench.seed under uvicorn, one process"),
            ("database, channel layer", f"{database}, {layer}"),
            ("reply", f"{args.tokens} tokens, {args.delay * 1000:g} ms apart (bench.upstream)"),
            ("load generator", f"this process ({loop_name})"),
        ],
    )
    for count in args.streams:
        results = {path: RUNNERS[path](args, count) for path in args.only}
        rows = level_rows(results)
        print_table(f"{count} concurrent repl{'ies' if count > 1 else 'y'}", rows)
        print("\n".join(level_notes(results)), flush=True)
    alone = run_alone(args)
    print_table(
        f"One reply alone ({args.tokens} tokens, {ALONE_DELAY * 1000:g} ms apart)",
        alone_rows(alone),
    )


if __name__ == "__main__":
    main()
