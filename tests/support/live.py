"""Real daphne processes over the test database, for tests that need the whole stack.

`Daphne(...)` starts daphne as production runs it (`python -m chatsite.serve`, daphne with a
graceful shutdown) in a subprocess on a free port, sharing pytest-django's test database (and
Redis, when REDIS_URL is set). It can stop it as a process manager does (SIGTERM), pause and
resume it (SIGSTOP, SIGCONT) or kill it with SIGKILL. `ChatClient` speaks to one such process as
a signed-in user: CSRF-checked POSTs over HTTP and the chat websocket, whose HTML fragments it
turns back into reply text. `ApiStream` sends a message through the JSON API and reads the
reply's server-sent events in a thread, while the test does other things to the server.
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
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx2
import websockets
from django.conf import settings
from django.test import Client

from conversations.models import Conversation, Message
from tests.support.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]
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


def server_env(model: FakeOpenAI, **extra: str) -> dict[str, str]:
    """The environment of a daphne that asks `model` for its replies and saves them often."""
    return {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": model.api_key or "sk-live-tests",
        "OPENAI_MAX_RETRIES": "0",
        "CHAT_DEFAULT_MODEL": "fake-model",
        "CHAT_FLUSH_SECONDS": "0.2",
        "CHAT_AUTO_TITLE": "0",
        **extra,
    }


def session_key(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def wait_for(condition, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def streaming_reply(conversation: Conversation) -> Message:
    wait_for(
        lambda: conversation.messages.filter(status=Message.Status.STREAMING).exists(),
        what="a streaming reply",
    )
    return conversation.messages.get(status=Message.Status.STREAMING)


def flushed_some_text(reply: Message) -> bool:
    reply.refresh_from_db()
    return bool(reply.content)


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
                    "chatsite.serve",
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

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd or docker stop a service; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def pause(self) -> None:
        """SIGSTOP: the process is frozen, as by a long pause of its machine or container."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused process cannot stop
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


class ApiStream(threading.Thread):
    """A message sent through the API with a token, its reply's events read as they arrive."""

    def __init__(self, server: Daphne, key: str, conversation_id, content: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.url}/api/v1/conversations/{conversation_id}/messages"
        self.key, self.content = key, content
        self.status_code = 0
        self.events: list[tuple[str, dict]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx2.stream(
                "POST",
                self.url,
                json={"content": self.content},
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=60,
            ) as response:
                self.status_code = response.status_code
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        self.events.append((event, json.loads(line.removeprefix("data: "))))
        except Exception as error:  # a cut stream: the test says what it expected instead
            self.error = error

    @property
    def text(self) -> str:
        """The reply's text as the client was sent it, delta by delta."""
        return "".join(data["text"] for event, data in self.events if event == "delta")

    def final_event(self, timeout: float = 30) -> tuple[str, dict]:
        """The stream's last event, once it has ended."""
        self.join(timeout)
        assert not self.is_alive(), "the stream did not end"
        assert self.status_code == 200 and self.events, (self.status_code, self.error)
        return self.events[-1]


def api_reply(server: Daphne, key: str, conversation: Conversation, text: str):
    """Send a message through `server`'s API: its event stream, being read, and its reply, once
    it is streaming."""
    stream = ApiStream(server, key, conversation.pk, text)
    stream.start()
    return stream, streaming_reply(conversation)


async def watch_until_finished(socket, watcher: ReplyWatcher, reply_id: str, timeout: float = 30):
    """Feed frames to the watcher until the reply is rendered in a final state."""

    async def pump() -> None:
        while watcher.status.get(reply_id) in (None, "streaming"):
            frame = await socket.recv()
            if frame.startswith("{"):
                raise AssertionError(f"error frame: {json.loads(frame)}")
            watcher.feed(frame)

    await asyncio.wait_for(pump(), timeout)
