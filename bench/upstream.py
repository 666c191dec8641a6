"""The model the benchmarks stream from: the fake OpenAI server of tests/support/fake_openai.py,
in a process of its own.

    python -m bench.upstream --port 8001 --tokens 100 --delay 0.02 --unique 1000

Run apart from both the app and the load generator, so that producing tokens takes no CPU from
either. With `--unique N` the first N chat requests each get a reply of their own
(`scripted_text(i, tokens)`): a benchmark can then check that every conversation received, and
stored, exactly one of them, and no two the same one. Later requests get `default_text(tokens)`.
"""

import argparse
import asyncio
import signal
import threading

from tests.support.fake_openai import FakeOpenAI, Reply

API_KEY = "bench"


def scripted_chunks(index: int, tokens: int) -> list[str]:
    return [f"r{index}t{n} " for n in range(tokens)]


def scripted_text(index: int, tokens: int) -> str:
    return "".join(scripted_chunks(index, tokens))


def default_chunks(tokens: int) -> list[str]:
    return [f"w{n} " for n in range(tokens)]


def default_text(tokens: int) -> str:
    return "".join(default_chunks(tokens))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--unique", type=int, default=0, help="requests with a reply of their own")
    args = parser.parse_args()
    try:
        import uvloop

        # The fake model should cost as little CPU as possible on a shared 2-core machine.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    server = FakeOpenAI(
        port=args.port,
        api_key=API_KEY,
        record_requests=False,
        default=Reply(chunks=default_chunks(args.tokens), delay=args.delay),
    )
    server.script(
        *(
            Reply(chunks=scripted_chunks(index, args.tokens), delay=args.delay)
            for index in range(args.unique)
        )
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print("ready", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
