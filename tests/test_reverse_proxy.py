"""The documented nginx configuration (docs/nginx.conf), run for real in front of two daphne
processes: pages, POSTs and websockets go wherever nginx sends them, with no sticky sessions."""

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conversations.models import Conversation, Message
from tests.support.fake_openai import FakeOpenAI, Reply
from tests.support.live import (
    ROOT,
    ChatClient,
    Daphne,
    ReplyWatcher,
    free_port,
    server_env,
    session_key,
    streaming_reply,
    watch_until_finished,
)
from tests.support.scaleout import API_KEY, FULL_TEXT, WORDS, shared_services

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True), shared_services]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    """nginx in the foreground with docs/nginx.conf, its upstreams and port filled in."""

    def __init__(self, upstreams: list[Daphne]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="chatsite-nginx-"))
        site = (ROOT / "docs" / "nginx.conf").read_text()
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        for documented, daphne in zip(["8001", "8002"], upstreams, strict=True):
            site = site.replace(
                f"server 127.0.0.1:{documented};", f"server 127.0.0.1:{daphne.port};"
            )
        (self.directory / "chatsite.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.directory / "nginx.conf").write_text(
            f"{user}pid {self.directory}/nginx.pid;\n"
            f"error_log {self.directory}/error.log;\n"
            "events {}\n"
            "http {\n"
            f"  access_log {self.directory}/access.log;\n"
            f"  client_body_temp_path {self.directory}/body;\n"
            f"  proxy_temp_path {self.directory}/proxy;\n"
            f"  include {self.directory}/chatsite.conf;\n"
            "}\n"
        )
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Nginx":
        self.process = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.directory),
                "-c",
                str(self.directory / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        pytest.fail("nginx did not listen")

    def __exit__(self, *exc_info) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def nginx_available() -> None:
    if not Path(NGINX).exists():
        reason = "nginx is not installed (apt-get install nginx-light)"
        if os.environ.get("CHATSITE_REQUIRE_NGINX") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def model():
    with FakeOpenAI(api_key=API_KEY) as server:
        server.default = Reply(chunks=WORDS, delay=0.02)
        yield server


def requests_served(daphne: Daphne) -> int:
    return sum(" - - [" in line for line in daphne.log.read_text().splitlines())


def test_chats_stream_and_stop_through_nginx_in_front_of_two_processes(
    nginx_available, alice, model
):
    conversation = Conversation.objects.create(owner=alice)
    key = session_key(alice)
    env = server_env(model)
    with Daphne("proxied-a", **env) as a, Daphne("proxied-b", **env) as b, Nginx([a, b]) as proxy:
        user = ChatClient(proxy, key)
        page = user.http.get(f"/c/{conversation.pk}/")
        assert page.status_code == 200

        async def stream_one() -> tuple[ReplyWatcher, str]:
            watcher = ReplyWatcher()
            async with user.websocket(conversation.pk) as chat_socket:
                response = await asyncio.to_thread(
                    user.post, f"/c/{conversation.pk}/messages/", {"text": "Count"}
                )
                assert response.status_code == 200
                while not watcher.status:
                    watcher.feed(await chat_socket.recv())
                reply_id = next(iter(watcher.status))
                await watch_until_finished(chat_socket, watcher, reply_id)
            return watcher, reply_id

        watcher, reply_id = asyncio.run(stream_one())
        assert watcher.text[reply_id] == FULL_TEXT
        assert Message.objects.get(pk=reply_id).content == FULL_TEXT

        assert user.post(f"/c/{conversation.pk}/messages/", {"text": "Again"}).status_code == 200
        reply = streaming_reply(conversation)

        async def stop_one() -> ReplyWatcher:
            watcher = ReplyWatcher()
            async with user.websocket(conversation.pk, last=str(reply.pk)) as chat_socket:
                while len(watcher.text.get(str(reply.pk), "")) < 40:
                    watcher.feed(await chat_socket.recv())
                stop = await asyncio.to_thread(user.post, f"/c/{conversation.pk}/stop/")
                assert stop.status_code == 204
                await watch_until_finished(chat_socket, watcher, str(reply.pk))
            return watcher

        stopped = asyncio.run(stop_one())
        reply.refresh_from_db()
        assert reply.status == Message.Status.STOPPED
        assert stopped.text[str(reply.pk)] == reply.content
        # nginx spread the work over both processes.
        assert requests_served(a) > 0 and requests_served(b) > 0
