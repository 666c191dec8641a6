"""Plain HTTP: requests per second of daphne and uvicorn serving the same app, measured by wrk.

    apt-get install wrk
    .venv/bin/python -m bench.plain_http
    .venv/bin/python -m bench.plain_http --connections 50 --seconds 10

Three pages, each for `--seconds` with `--connections` keep-alive connections (one wrk thread):
- the sign-in page (a Django view rendering a template, with a CSRF cookie; no database query),
- a static file (WhiteNoise answers it from memory, in middleware, before any view),
- a bare ASGI "hello" (`hello` below, no Django at all): what the server itself costs.
Besides requests per second and latency, the table gives the server's CPU time per request (from
/proc), which does not depend on what else the machine runs at the same time.
"""

import argparse
import re
import shutil
import subprocess
import sys

from bench.common import print_table, setup_django
from bench.servers import SERVERS, AppServer, CpuMeter

PAGES = {"sign-in page": "/accounts/login/", "static file": "/static/css/app.css"}


async def hello(scope, receive, send) -> None:
    """The smallest ASGI application: 13 bytes of text for any request."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def measure(server: AppServer, name: str, path: str, args) -> tuple[str, str]:
    wrk(server.url + path, args.connections, 2)  # warm up
    with CpuMeter({"server": server}) as meter:
        result = wrk(server.url + path, args.connections, args.seconds)
    cpu_per_request = meter.used["server"] / max(1, result["requests"])
    others = meter.used["other processes"] / meter.wall
    problems = ""
    if result["errors"] or result["socket_errors"]:
        problems = f"   {result['errors']} non-2xx {result['socket_errors']}"
    return (
        f"{server.kind}: {name}",
        f"{result['per_second']:7.0f} req/s   p50 {result['p50'] * 1000:6.1f} ms"
        f"   p99 {result['p99'] * 1000:6.1f} ms"
        f"   server CPU {cpu_per_request * 1e6:5.0f} µs/request"
        f"   (wrk + other processes {others:.0%} CPU){problems}",
    )


def wrk(url: str, connections: int, seconds: int) -> dict:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0}

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return float(value) * units[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failures = re.search(r"Socket errors: .*", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": failures.group(0) if failures else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_http", description=__doc__)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    setup_django()
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    rows = [("load", f"wrk, 1 thread, {args.connections} connections, {args.seconds} s per page")]
    for kind in SERVERS:
        with AppServer(kind) as server:
            rows += [measure(server, name, path, args) for name, path in PAGES.items()]
        with AppServer(kind, application="bench.plain_http:hello") as server:
            rows.append(measure(server, "bare ASGI hello", "/", args))
    print_table("Plain HTTP, one server process", rows)


if __name__ == "__main__":
    main()
