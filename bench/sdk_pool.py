"""What the `openai` SDK's default connection pool does past 1,000 concurrent streams.

    .venv/bin/python -m bench.sdk_pool

One `AsyncOpenAI` client, built as conversations/llm/client.py builds it (no `http_client`, so the
SDK's DEFAULT_CONNECTION_LIMITS apply), opens 1,010 streams at once against the fake model, each
5 tokens 2 s apart (a 10-second reply). A stream beyond the pool's `max_connections` waits for a
connection to come free, that is for another stream to end, before its request is even sent.
"""

import asyncio
import time

import openai
from openai._constants import DEFAULT_CONNECTION_LIMITS

from bench.common import print_table
from bench.servers import Upstream, percentile, use_uvloop

STREAMS = 1010


async def first_token_after(client: openai.AsyncOpenAI, started: float) -> float:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    first = None
    async with stream:
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - started
    return first


async def measure(upstream: Upstream) -> list[float]:
    client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0)
    started = time.monotonic()
    firsts = await asyncio.gather(*(first_token_after(client, started) for _ in range(STREAMS)))
    await client.close()
    return sorted(firsts)


def main() -> None:
    use_uvloop()
    with Upstream(tokens=5, delay=2.0) as upstream:
        firsts = asyncio.run(measure(upstream))
    limit = DEFAULT_CONNECTION_LIMITS.max_connections
    print_table(
        "The openai SDK's default connection pool",
        [
            ("DEFAULT_CONNECTION_LIMITS", repr(DEFAULT_CONNECTION_LIMITS)),
            ("streams opened at once", f"{STREAMS}, each 5 tokens 2 s apart"),
            ("first token, p50", f"{percentile(firsts, 0.5):.1f} s"),
            (f"first token, stream {limit}", f"{firsts[limit - 1]:.1f} s"),
            (f"first token, stream {limit + 1}", f"{firsts[limit]:.1f} s"),
            ("first token, last stream", f"{firsts[-1]:.1f} s"),
        ],
    )


if __name__ == "__main__":
    main()
