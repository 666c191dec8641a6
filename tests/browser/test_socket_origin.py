"""A page served from another port of the same host (another local web app beside a
self-hosted chatsite) cannot open the signed-in user's websocket: the browser sends the
user's cookie along, and the handshake is refused by its origin."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page

from tests.support.browser import send, sign_up, wait_for_status
from tests.support.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db(transaction=True)

# Opens the chat socket of `path` on the chat server `host`: what it got, once it has its first
# frame, is refused or closed, or has stayed open and quiet for two seconds.
PROBE = """([host, path]) => new Promise(resolve => {
  let opened = false;
  const finish = received => { socket.close(); resolve({opened, received}); };
  const socket = new WebSocket(`ws://${host}/ws${path}`);
  socket.onopen = () => { opened = true; setTimeout(() => finish([]), 2000); };
  socket.onmessage = event => finish([event.data]);
  socket.onerror = socket.onclose = () => finish([]);
})"""


class OtherApp(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"<!doctype html><title>Another local app</title><p>Hello")

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def other_app() -> Iterator[str]:
    """Another web app on 127.0.0.1, on a port of its own; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtherApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_page_on_another_port_cannot_open_the_users_socket(
    page: Page, model: FakeOpenAI, chat_server: str, other_app: str
) -> None:
    secret = "My locker combination is 12-34-56."
    model.script(Reply(text="Noted."))
    sign_up(page, "owner@example.com")
    send(page, secret)
    wait_for_status(page, "complete")
    conversation_path = urlparse(page.url).path
    chat_host = urlparse(chat_server).netloc

    # The chat's own page opens it and is sent the conversation (it names no last message).
    own = page.evaluate(PROBE, [chat_host, conversation_path])
    # The same script on the other app's page, in the same browser: the cookie goes along.
    other = page.context.new_page()
    other.goto(other_app)
    foreign = other.evaluate(PROBE, [chat_host, conversation_path])
    foreign_sidebar = other.evaluate(PROBE, [chat_host, "/chat/"])

    assert own["opened"] and any(secret in frame for frame in own["received"])
    assert foreign == {"opened": False, "received": []}
    assert foreign_sidebar == {"opened": False, "received": []}
