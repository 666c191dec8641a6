"""Websockets opened the way a chat page opens them: the page's Origin, Host and session cookie,
and the frames read the way the htmx ws extension applies them."""

import html
import re

from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient, Client

from chatsite.asgi import application
from conversations.models import Conversation, Message

SITE_ORIGIN = "http://localhost"


_DELTA = re.compile(
    r'<div hx-swap-oob="beforeend:#message-(?P<id>[0-9a-f-]+)-text">(?P<text>.*?)</div>', re.S
)


class ChatSocket:
    """A chat page's websocket, its frames read the way the htmx ws extension applies them."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.connected = False
        self.frames: list[str] = []

    async def receive(self, timeout: float = 5) -> str:
        frame = await self.communicator.receive_from(timeout=timeout)
        self.frames.append(frame)
        return frame

    async def receive_until_done(self, reply: Message, timeout: float = 10) -> str:
        """Read frames until one shows the reply finished (complete, stopped, failed)."""
        while True:
            frame = await self.receive(timeout)
            if shows_finished(frame, reply):
                return frame

    async def receive_until_text(self, reply: Message, timeout: float = 5) -> str:
        """Read frames until some text of the streaming reply has arrived."""
        while not self.text_of(reply):
            await self.receive(timeout)
        return self.text_of(reply)

    def text_of(self, reply: Message) -> str:
        """The streaming reply's text as the page shows it: the last copy of the whole reply
        that a frame carried, then the deltas appended to it since."""
        text = ""
        for frame in self.frames:
            whole = re.search(rf'id="message-{reply.pk}-text">(.*?)</div>', frame, re.S)
            if whole:
                text = html.unescape(whole[1])
            for delta in _DELTA.finditer(frame):
                if delta["id"] == str(reply.pk):
                    text += html.unescape(delta["text"])
        return text

    def delta_count(self, reply: Message) -> int:
        return sum(
            delta["id"] == str(reply.pk)
            for frame in self.frames
            for delta in _DELTA.finditer(frame)
        )


def shows_finished(frame: str, reply: Message) -> bool:
    """Whether the frame carries the reply, rendered in a final (not streaming) state."""
    tag = re.search(rf'<li id="message-{reply.pk}"[^>]*>', frame)
    return bool(tag) and "status-streaming" not in tag[0]


async def websocket_path(conversation: Conversation, client: Client | None) -> str:
    """The socket URL the conversation page tells htmx to open, as `client` sees the page."""
    if client is not None:
        browser = AsyncClient()
        browser.cookies = client.cookies
        response = await browser.get(conversation.get_absolute_url())
        found = re.search(r'ws-connect="([^"]+)"', response.content.decode())
        if response.status_code == 200 and found:
            return html.unescape(found[1])
    return f"/ws/c/{conversation.pk}/"


def home_page_socket(client: Client | AsyncClient) -> WebsocketCommunicator:
    """The socket of a new-chat page in that browser, not yet connected: it carries the
    browser's session cookie and the page's Origin and Host. It hears the user's own events."""
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}".encode()
    headers = [(b"origin", SITE_ORIGIN.encode()), (b"host", b"localhost"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, "/ws/chat/", headers=headers)


async def open_home_socket(client: Client | AsyncClient) -> WebsocketCommunicator:
    """A new-chat page's socket in that browser, open."""
    communicator = home_page_socket(client)
    connected, _ = await communicator.connect()
    assert connected
    return communicator
