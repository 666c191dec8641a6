"""Processes and clients for the load benchmarks.

- `AppServer`: chatsite.asgi:application under daphne or uvicorn in a subprocess, over the bench
  database (and Redis when REDIS_URL is set), with the CPU time and resident memory of its
  process read from /proc.
- `Upstream`: the fake model (bench.upstream) in a subprocess.
- `SeedServer`: the seed design (bench.seed) under uvicorn in a subprocess.
- `signed_in_users`: many users, each with a conversation and a signed-in session, made fast;
  `api_keys`: a personal API token for each.
- `Browser`: what a chat page does over the wire: CSRF-checked POSTs and the chat websocket.
"""

import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import websockets

from bench.common import ROOT
from bench.upstream import API_KEY

LOGS = ROOT / "test-artifacts"
SERVERS = ("daphne", "uvicorn")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{log.name}: process exited:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{log.name}: nothing listening on {port}:\n{log.read_text()}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now (second field of /proc/<pid>/statm)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


class Process:
    """A child process started with a log file, stopped politely on exit."""

    process: subprocess.Popen | None = None

    def start(self, command: list[str], env: dict[str, str], port: int, log: Path) -> None:
        LOGS.mkdir(exist_ok=True)
        with log.open("w") as output:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        wait_until_listening(self.process, port, log)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class Upstream(Process):
    """The fake OpenAI-compatible model, in its own process."""

    def __init__(self, *, tokens: int, delay: float, unique: int = 0) -> None:
        self.tokens = tokens
        self.delay = delay
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = API_KEY
        self.arguments = [
            f"--port={self.port}",
            f"--tokens={tokens}",
            f"--delay={delay}",
            f"--unique={unique}",
        ]

    def __enter__(self) -> "Upstream":
        command = [sys.executable, "-m", "bench.upstream", *self.arguments]
        self.start(command, dict(os.environ), self.port, LOGS / f"bench-upstream-{self.port}.log")
        return self


class AppServer(Process):
    """chatsite.asgi:application served by daphne or uvicorn, one process, default options."""

    def __init__(
        self,
        kind: str,
        upstream: Upstream | None = None,
        application: str = "chatsite.asgi:application",
        **env: str,
    ) -> None:
        if kind not in SERVERS:
            raise ValueError(f"unknown server {kind!r}: choose from {SERVERS}")
        self.kind = kind
        self.application = application
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        model = (
            {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": upstream.api_key}
            if upstream
            else {}
        )
        self.env = {
            **os.environ,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # An extra request to the model after every first reply would skew the figures.
            "CHAT_AUTO_TITLE": "0",
            "LOG_LEVEL": "WARNING",
            **model,
            **env,
        }
        self.env.pop("DEBUG", None)

    def command(self) -> list[str]:
        if self.kind == "daphne":
            # As production runs it: daphne with chatsite's graceful stop.
            serve = [sys.executable, "-m", "chatsite.serve"]
            return [*serve, "-b", "127.0.0.1", "-p", str(self.port)]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--host=127.0.0.1",
            f"--port={self.port}",
            # Channels' router has no lifespan protocol; uvicorn would log that at every start.
            "--lifespan=off",
            "--no-access-log",
            "--log-level=warning",
        ]

    def __enter__(self) -> "AppServer":
        log = LOGS / f"bench-{self.kind}-{self.port}.log"
        self.start([*self.command(), self.application], self.env, self.port, log)
        return self


class SeedServer(Process):
    """bench.seed:app (the seed design) under uvicorn, one process, default options."""

    def __init__(self, database_url: str, upstream: Upstream) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SEED_DATABASE_URL": database_url,
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": upstream.api_key,
        }

    def __enter__(self) -> "SeedServer":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--host=127.0.0.1",
            f"--port={self.port}",
            "--no-access-log",
            "--log-level=warning",
            "bench.seed:app",
        ]
        self.start(command, self.env, self.port, LOGS / f"bench-seed-{self.port}.log")
        return self


@dataclass
class SignedIn:
    user_id: int
    session_key: str
    conversation_id: str


def signed_in_users(count: int, prefix: str) -> list[SignedIn]:
    """`count` users, each signed in (a session in the database) with one empty conversation.

    Each has a user of their own, as in real life: one user's open pages all redraw their
    sidebar whenever any of that user's conversations gets a message.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password

    from accounts.models import User
    from conversations.models import Conversation

    unusable = make_password(None)
    User.objects.bulk_create(
        [User(email=f"{prefix}-{n}@example.com", password=unusable) for n in range(count)]
    )
    users = list(User.objects.filter(email__startswith=f"{prefix}-").order_by("pk"))
    conversations = Conversation.objects.bulk_create([Conversation(owner=user) for user in users])
    session_store = import_module(settings.SESSION_ENGINE).SessionStore
    signed_in = []
    for user, conversation in zip(users, conversations, strict=True):
        session = session_store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        signed_in.append(SignedIn(user.pk, session.session_key, str(conversation.pk)))
    return signed_in


def api_keys(people: list[SignedIn]) -> list[str]:
    """A personal API token for each person, made in one statement; returns their keys."""
    from accounts.models import ApiToken

    keys = [secrets.token_urlsafe(32) for _ in people]
    ApiToken.objects.bulk_create(
        [
            ApiToken(
                user_id=person.user_id,
                name="bench",
                prefix=key[: ApiToken.PREFIX_LENGTH],
                hashed_key=ApiToken.hash(key),
            )
            for person, key in zip(people, keys, strict=True)
        ]
    )
    return keys


def delete_users(prefix: str, signed_in: list[SignedIn]) -> None:
    """Remove what `signed_in_users` made (conversations and messages go with the users)."""
    from django.contrib.sessions.models import Session

    from accounts.models import User

    Session.objects.filter(session_key__in=[person.session_key for person in signed_in]).delete()
    User.objects.filter(email__startswith=f"{prefix}-").delete()


class Browser:
    """One signed-in person's page on one server: POSTs with CSRF, and the chat websocket.

    The CSRF cookie is not tied to a session, so one token (fetched once from the server)
    serves every Browser; each sends it as the cookie and as the X-CSRFToken header, as htmx does.
    """

    def __init__(self, http: httpx2.AsyncClient, server: AppServer, session_key: str, csrf: str):
        self.http = http
        self.server = server
        self.session_key = session_key
        self.csrf = csrf

    async def post(self, path: str, data: dict[str, str]) -> httpx2.Response:
        return await self.http.post(
            self.server.url + path,
            data=data,
            headers={
                "Cookie": f"sessionid={self.session_key}; csrftoken={self.csrf}",
                "X-CSRFToken": self.csrf,
                "HX-Request": "true",
                "Origin": self.server.url,
            },
        )

    def websocket(self, conversation_id: str):
        return websockets.connect(
            f"ws://127.0.0.1:{self.server.port}/ws/c/{conversation_id}/?last=",
            additional_headers={
                "Cookie": f"sessionid={self.session_key}",
                "Origin": self.server.url,
            },
            max_size=None,
            # The benchmarks time frames: no pings competing with them.
            ping_interval=None,
            open_timeout=120,
        )


async def csrf_token(http: httpx2.AsyncClient, server: AppServer) -> str:
    response = await http.get(server.url + "/accounts/login/")
    response.raise_for_status()
    return response.cookies["csrftoken"]


def use_uvloop() -> str:
    """Run the load generator on uvloop when installed: it leaves more CPU to the server.

    Also silences the HTTP client's log line per request (Django's logging config sets INFO).
    """
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of them at or below."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def describe_backends() -> tuple[str, str]:
    """(database, channel layer) in use, as the tables print them."""
    from django.conf import settings
    from django.db import connection

    database = connection.vendor
    if database == "postgresql":
        database += f" {connection.cursor().connection.info.server_version // 10000}"
    layer = "redis (channels-redis)" if settings.REDIS_URL else "in-memory (one process only)"
    return database, layer


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine spent busy so far (first line of /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU time of this process (the load generator) so far."""
    return cpu_seconds(os.getpid())


class CpuMeter:
    """CPU seconds used over an interval by each of our processes, and by everything else."""

    def __init__(self, processes: dict[str, Process]) -> None:
        self.processes = processes

    def _read(self) -> dict[str, float]:
        reading = {name: process.cpu_seconds() for name, process in self.processes.items()}
        reading["load generator"] = own_cpu_seconds()
        reading["machine"] = machine_busy_seconds()
        return reading

    def __enter__(self) -> "CpuMeter":
        self.started_at = time.monotonic()
        self.start = self._read()
        return self

    def __exit__(self, *exc_info) -> None:
        self.wall = time.monotonic() - self.started_at
        end = self._read()
        self.used = {name: end[name] - self.start[name] for name in end}
        ours = sum(seconds for name, seconds in self.used.items() if name != "machine")
        self.used["other processes"] = max(0.0, self.used.pop("machine") - ours)

    def shares(self) -> str:
        """Each one's CPU as a share of one core over the interval, e.g. 'daphne 98%, ...'."""
        return ", ".join(f"{name} {seconds / self.wall:.0%}" for name, seconds in self.used.items())
