"""Real daphne processes over the test database, for tests that need the whole stack.

`Daphne(...)` starts `daphne chatsite.asgi:application` in a subprocess on a free port, sharing
pytest-django's test database (and Redis, when REDIS_URL is set), and can stop it politely or
kill it with SIGKILL. `ChatClient` speaks to one such process as a signed-in user: CSRF-checked
POSTs over HTTP and the chat websocket, whose HTML fragments it turns back into reply text.
"""

import asyncio
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx2
import websockets
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def database_url() -> str:
    """The test database that pytest-django created, as a DATABASE_URL for another process."""
    database = settings.DATABASES["default"]
    engine = database["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(database['NAME']).resolve()}"
    if engine == "django.db.backends.postgresql":
        credentials = quote(database["USER"], safe="")
        if database.get("PASSWORD"):
            credentials += ":" + quote(database["PASSWORD"], safe="")
        host = database.get("HOST") or "localhost"
        port = f":{database['PORT']}" if database.get("PORT") else ""
        return f"postgres://{credentials}@{host}{port}/{quote(database['NAME'], safe='')}"
    raise RuntimeError(f"No way to share a {engine} database with daphne")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daphne:
    """One daphne process serving chatsite over the test database."""

    def __init__(self, name: str, **env: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = ARTIFACTS / f"daphne-{name}.log"
        inherited = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DEBUG", "OPENAI_API_KEY", "OPENAI_BASE_URL", "REDIS_URL"}
        }
        self.env = {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DATABASE_URL": database_url(),
            "SECRET_KEY": settings.SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            **({"REDIS_URL": settings.REDIS_URL} if settings.REDIS_URL else {}),
            **env,
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Daphne":
        ARTIFACTS.mkdir(exist_ok=True)
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "chatsite.asgi:application",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne {self.name} exited:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne {self.name} did not listen:\n{self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-work, with no chance to clean up."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_DELTA = re.compile(r'<div hx-swap-oob="beforeend:#message-([0-9a-f-]+)-text">(.*?)</div>', re.S)
_STREAMING = re.compile(
    r'<div class="message-body streaming" id="message-([0-9a-f-]+)-text">(.*?)</div>', re.S
)
_FINISHED = re.compile(
    r'<li id="message-([0-9a-f-]+)" class="message message-assistant status-(\w+)"'
)


class ReplyWatcher:
    """Rebuilds the text of replies from the fragments a chat websocket sends.

    A re-sent streaming reply sets its text (that is what the page does: it replaces the
    element); a delta appends. Any text that is not a prefix of the final reply is a defect.
    """

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.status: dict[str, str] = {}

    def feed(self, frame: str) -> None:
        for reply_id, status in _FINISHED.findall(frame):
            self.status[reply_id] = status
        for reply_id, prefix in _STREAMING.findall(frame):
            self.text[reply_id] = html.unescape(prefix)
        for reply_id, piece in _DELTA.findall(frame):
            self.text[reply_id] = self.text.get(reply_id, "") + html.unescape(piece)


class ChatClient:
    """A signed-in user talking to one daphne process."""

    def __init__(self, server: Daphne, session_key: str) -> None:
        self.server = server
        self.http = httpx2.Client(base_url=server.url, cookies={"sessionid": session_key})
        self.session_key = session_key

    def _csrf(self) -> str:
        self.http.get("/")
        return self.http.cookies["csrftoken"]

    def post(self, path: str, data: dict | None = None) -> httpx2.Response:
        token = self._csrf()
        return self.http.post(
            path,
            data=data or {},
            headers={"X-CSRFToken": token, "HX-Request": "true", "Origin": self.server.url},
        )

    def websocket(self, conversation_id, last: str = ""):
        url = f"ws://127.0.0.1:{self.server.port}/ws/c/{conversation_id}/?last={last}"
        cookie = f"sessionid={self.session_key}"
        return websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": self.server.url}
        )


async def watch_until_finished(socket, watcher: ReplyWatcher, reply_id: str, timeout: float = 30):
    """Feed frames to the watcher until the reply is rendered in a final state."""

    async def pump() -> None:
        while watcher.status.get(reply_id) in (None, "streaming"):
            frame = await socket.recv()
            if frame.startswith("{"):
                raise AssertionError(f"error frame: {json.loads(frame)}")
            watcher.feed(frame)

    await asyncio.wait_for(pump(), timeout)
