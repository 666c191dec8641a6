"""Relay overhead: what the app adds between the model and the browser.

    .venv/bin/python -m bench.relay                      # SQLite scratch database, daphne
    .venv/bin/python -m bench.relay --server uvicorn
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m bench.relay

One fake model (bench.upstream, a process of its own) answers two clients in turn, run after run:
- the raw `openai` SDK (`AsyncOpenAI`, `stream=True`) in this process;
- the app, as a browser uses it: a chat websocket already open on a conversation, then the
  POST of a message; the reply comes back as HTML fragments on the websocket.

Time to first token (TTFT) is measured in this process on one clock, from the moment the request
is handed to the client library (`chat.completions.create(...)` for the SDK, the POST for the app)
to the moment the first piece of reply text is in hand (the first chunk with non-empty
`delta.content`; the first websocket fragment that adds text to the reply). The app's TTFT thus
includes everything a user waits for: the POST (session, CSRF, storing the message and the empty
reply), starting the generation, its own request to the model, and the fragment's way back through
the channel layer and the consumer.

Token rate: characters received after the first text, over the time from the first text to the
last, in tokens per second (the reply's characters per token). Two upstreams:
- paced: tokens `--delay` apart, as a hosted model sends them: the app should keep the pace;
- burst: `--burst-tokens` sent back to back, as fast as the fake model can: the ceiling of one
  stream through the app against the ceiling of the SDK alone.
"""

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

import httpx2
import openai

from bench.common import print_table, setup_django
from bench.servers import (
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

WARMUP_RUNS = 3


@dataclass
class Run:
    ttft: float
    rate: float  # tokens per second after the first text
    whole: float  # seconds from the request to the last text
    text: str


def rate_of(text: str, first_chars: int, first_at: float, last_at: float, tokens: int) -> float:
    if last_at <= first_at:
        return float("inf")
    chars_per_token = len(text) / tokens
    return (len(text) - first_chars) / chars_per_token / (last_at - first_at)


async def through_sdk(client: openai.AsyncOpenAI, tokens: int) -> Run:
    parts: list[str] = []
    first_at = last_at = 0.0
    first_chars = 0
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                last_at = time.monotonic()
                if not parts:
                    first_at, first_chars = last_at, len(chunk.choices[0].delta.content)
                parts.append(chunk.choices[0].delta.content)
    text = "".join(parts)
    rate = rate_of(text, first_chars, first_at, last_at, tokens)
    return Run(first_at - started, rate, last_at - started, text)


async def through_app(browser: Browser, person: SignedIn, tokens: int) -> Run:
    from tests.support.live import ReplyWatcher

    watcher = ReplyWatcher()
    first_at = last_at = 0.0
    first_chars = 0
    async with browser.websocket(person.conversation_id) as socket:
        started = time.monotonic()
        post = asyncio.create_task(
            browser.post(f"/c/{person.conversation_id}/messages/", {"text": "Hello"})
        )
        reply_id = None
        while reply_id is None or watcher.status.get(reply_id) == "streaming":
            frame = await socket.recv()
            received_at = time.monotonic()
            before = sum(map(len, watcher.text.values()))
            watcher.feed(frame)
            if sum(map(len, watcher.text.values())) > before:
                last_at = received_at
                if not first_at:
                    first_at, first_chars = received_at, sum(map(len, watcher.text.values()))
            reply_id = reply_id or next(iter(watcher.status), None)
        response = await post
    if response.status_code != 200 or watcher.status[reply_id] != "complete":
        raise RuntimeError(f"reply {reply_id}: HTTP {response.status_code}, {watcher.status}")
    text = watcher.text[reply_id]
    rate = rate_of(text, first_chars, first_at, last_at, tokens)
    return Run(first_at - started, rate, last_at - started, text)


async def compare(server: AppServer, upstream: Upstream, people: list[SignedIn], tokens: int):
    """Alternate app and SDK runs against the same upstream; return both lists of runs."""
    sdk = openai.AsyncOpenAI(base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0)
    app_runs: list[Run] = []
    sdk_runs: list[Run] = []
    async with httpx2.AsyncClient(timeout=60) as http:
        csrf = await csrf_token(http, server)
        for number, person in enumerate(people):
            browser = Browser(http, server, person.session_key, csrf)
            app_run = await through_app(browser, person, tokens)
            sdk_run = await through_sdk(sdk, tokens)
            if app_run.text != sdk_run.text:
                raise RuntimeError("the app relayed a different text than the model sent")
            if number >= WARMUP_RUNS:
                app_runs.append(app_run)
                sdk_runs.append(sdk_run)
    await sdk.close()
    return app_runs, sdk_runs


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(label: str, app_runs: list[Run], sdk_runs: list[Run], paced: bool) -> list:
    def p(runs: list[Run], attribute: str, fraction: float) -> float:
        return percentile([getattr(run, attribute) for run in runs], fraction)

    def compare_times(name: str, attribute: str, fraction: float) -> tuple[str, str]:
        app, sdk = p(app_runs, attribute, fraction), p(sdk_runs, attribute, fraction)
        return (
            f"{label}: {name}",
            f"SDK {ms(sdk):>9}   app {ms(app):>9}   app adds {ms(app - sdk):>9}"
            f"   ratio {app / sdk:5.2f}",
        )

    def compare_rates(name: str, app: float, sdk: float) -> tuple[str, str]:
        return f"{label}: {name}", f"SDK {sdk:9.0f}   app {app:9.0f}   kept {app / sdk:9.1%}"

    rows = [compare_times("TTFT p50", "ttft", 0.5), compare_times("TTFT p90", "ttft", 0.9)]
    if paced:
        # For a rate the bad tail is the low end: the "p90" row is the rate 90% of runs reached.
        rows += [
            compare_rates("tokens/s p50", p(app_runs, "rate", 0.5), p(sdk_runs, "rate", 0.5)),
            compare_rates(
                "tokens/s p90 (slowest 10%)", p(app_runs, "rate", 0.1), p(sdk_runs, "rate", 0.1)
            ),
        ]
        added = p(app_runs, "ttft", 0.5) - p(sdk_runs, "ttft", 0.5)
        kept = p(app_runs, "rate", 0.5) / p(sdk_runs, "rate", 0.5)
        rows.append(
            (
                f"{label}: targets",
                f"adds < 5 ms to TTFT p50: {'met' if added < 0.005 else 'MISSED'};"
                f" keeps >= 95% of the token rate: {'met' if kept >= 0.95 else 'MISSED'}",
            )
        )
    else:
        # Back-to-back tokens reach the app in a few large fragments: a rate between the first
        # and the last says little. What counts is how long the whole reply takes.
        tokens = len(app_runs[0].text.split())
        rows += [
            compare_times("whole reply p50", "whole", 0.5),
            compare_times("whole reply p90", "whole", 0.9),
            compare_rates(
                "tokens/s, whole reply p50",
                tokens / p(app_runs, "whole", 0.5),
                tokens / p(sdk_runs, "whole", 0.5),
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--server", choices=SERVERS, default="daphne")
    parser.add_argument("--runs", type=int, default=50, help="measured runs per upstream")
    parser.add_argument("--tokens", type=int, default=100, help="tokens of a paced reply")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between paced tokens")
    parser.add_argument("--burst-tokens", type=int, default=5000)
    parser.add_argument("--burst-runs", type=int, default=10)
    parser.add_argument(
        "--app", default="chatsite.asgi:application", help="ASGI application the server runs"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="server environment"
    )
    args = parser.parse_args()
    server_env = dict(setting.split("=", 1) for setting in args.env)

    database_url = setup_django()
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    loop_name = use_uvloop()
    database, layer = describe_backends()
    prefix = f"bench-relay-{uuid.uuid4().hex[:8]}"
    people = signed_in_users(2 * WARMUP_RUNS + args.runs + args.burst_runs, prefix)
    paced_people = people[: WARMUP_RUNS + args.runs]
    burst_people = people[WARMUP_RUNS + args.runs :]
    rows = [
        ("server", f"{args.server}, one process"),
        ("database, channel layer", f"{database}, {layer}"),
        ("load generator", f"this process ({loop_name}); model: bench.upstream process"),
        ("paced upstream", f"{args.tokens} tokens, {args.delay * 1000:g} ms apart"),
        ("burst upstream", f"{args.burst_tokens} tokens, back to back"),
        ("runs", f"{args.runs} paced, {args.burst_runs} burst, each app then SDK"),
        *([("application", args.app)] if args.app != "chatsite.asgi:application" else []),
        *([("server environment", " ".join(args.env))] if args.env else []),
    ]
    try:
        for label, tokens, delay, group in (
            ("paced", args.tokens, args.delay, paced_people),
            ("burst", args.burst_tokens, 0.0, burst_people),
        ):
            with (
                Upstream(tokens=tokens, delay=delay) as upstream,
                AppServer(args.server, upstream, args.app, **server_env) as server,
            ):
                with CpuMeter({"server": server, "fake model": upstream}) as meter:
                    app_runs, sdk_runs = asyncio.run(compare(server, upstream, group, tokens))
            rows += summary(label, app_runs, sdk_runs, paced=label == "paced")
            rows.append((f"{label}: CPU (share of one core)", meter.shares()))
    finally:
        delete_users(prefix, people)
    print_table(f"Relay overhead ({database_url.split('://')[0]})", rows)


if __name__ == "__main__":
    main()
