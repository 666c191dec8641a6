"""Shared fixtures: two users, their logged-in clients, conversations, a fake model provider
and websockets watching a conversation the way a chat page does."""

import html
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime, timedelta

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient, Client
from django.utils import timezone

from accounts.models import User
from chatsite.asgi import application
from conversations import generation, provider
from conversations.models import Conversation, Message
from tests.fake_openai import FakeOpenAI

PASSWORD = "correct horse battery staple"
SITE_ORIGIN = "http://localhost"


@pytest.fixture(autouse=True)
def fast_replies(settings) -> None:
    """The offline model streams without pauses, deltas and flushes come quickly."""
    settings.CHAT_OFFLINE_TOKEN_DELAY = 0
    settings.CHAT_DELTA_BATCH_SECONDS = 0.005
    settings.CHAT_FLUSH_SECONDS = 0.02


@pytest.fixture(autouse=True)
def fresh_channel_layer_and_client() -> Iterator[None]:
    """Every test gets its own channel layer and model client.

    Both hold state bound to the event loop that first used them, and every async test runs
    on a loop of its own.
    """
    channel_layers.backends.clear()
    provider._client.cache_clear()
    yield
    generation._running.clear()
    channel_layers.backends.clear()
    provider._client.cache_clear()


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice@example.com", PASSWORD)


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob@example.com", PASSWORD)


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob: User) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def alice_async_client(alice: User) -> AsyncClient:
    client = AsyncClient()
    client.force_login(alice)
    return client


@pytest.fixture
def make_conversation(alice: User) -> Callable[..., Conversation]:
    """Create a conversation (Alice's unless told otherwise) with a finished history.

    `history` is a sequence of (role, content) pairs, stored oldest first, a second apart.
    """

    def make(
        owner: User | None = None,
        *,
        title: str = "",
        metadata: dict | None = None,
        history: Sequence[tuple[str, str]] = (),
        updated_at: datetime | None = None,
    ) -> Conversation:
        started = (updated_at or timezone.now()) - timedelta(seconds=len(history) + 1)
        conversation = Conversation.objects.create(
            owner=owner or alice,
            title=title,
            metadata=metadata or {},
            created_at=started,
            updated_at=updated_at or timezone.now(),
        )
        for position, (role, content) in enumerate(history, start=1):
            Message.objects.create(
                conversation=conversation,
                role=role,
                content=content,
                created_at=started + timedelta(seconds=position),
            )
        return conversation

    return make


@pytest.fixture
def conversation(make_conversation: Callable[..., Conversation]) -> Conversation:
    """Alice's conversation, with one question answered."""
    return make_conversation(
        title="Trip planning",
        history=[("user", "Where should I go in May?"), ("assistant", "Try **Lisbon**.")],
    )


@pytest.fixture
def fake_openai(settings) -> Iterator[FakeOpenAI]:
    """A real-HTTP OpenAI-compatible server, with the site pointed at it."""
    with FakeOpenAI() as server:
        settings.OPENAI_BASE_URL = server.base_url
        settings.OPENAI_API_KEY = "sk-test"
        settings.OPENAI_MAX_RETRIES = 0
        settings.OPENAI_TIMEOUT = 5.0
        settings.OPENAI_CONNECT_TIMEOUT = 5.0
        yield server


_DELTA = re.compile(
    r'<div hx-swap-oob="beforeend:#message-(?P<id>[0-9a-f-]+)-text">(?P<text>.*?)</div>', re.S
)
_STREAMING_BODY = re.compile(
    r'<div class="message-body streaming" id="message-(?P<id>[0-9a-f-]+)-text">(?P<text>.*?)</div>',
    re.S,
)


class ChatSocket:
    """A websocket on a conversation, read the way the htmx ws extension applies it."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.connected = False
        self.frames: list[str] = []

    async def receive(self, timeout: float = 5) -> str:
        frame = await self.communicator.receive_from(timeout=timeout)
        self.frames.append(frame)
        return frame

    async def receive_until_done(self, reply: Message, timeout: float = 10) -> str:
        """Read frames until the finished reply replaces its streaming placeholder."""
        while True:
            frame = await self.receive(timeout)
            if is_finished_reply(frame, reply):
                return frame

    async def receive_until_text(self, reply: Message, timeout: float = 5) -> str:
        """Read frames until some text of the reply has arrived."""
        while not self.text_of(reply):
            await self.receive(timeout)
        return self.text_of(reply)

    def text_of(self, reply: Message) -> str:
        """The reply's text as the page shows it: a resent prefix, then appended deltas."""
        text = ""
        for frame in self.frames:
            prefix = _STREAMING_BODY.search(frame)
            if prefix and prefix["id"] == str(reply.pk) and 'hx-swap-oob="true"' in frame:
                text = html.unescape(prefix["text"])
            for delta in _DELTA.finditer(frame):
                if delta["id"] == str(reply.pk):
                    text += html.unescape(delta["text"])
        return text

    def delta_count(self, reply: Message) -> int:
        return sum(
            delta["id"] == str(reply.pk) for frame in self.frames for delta in _DELTA.finditer(frame)
        )


def is_finished_reply(frame: str, reply: Message) -> bool:
    return (
        f'id="message-{reply.pk}"' in frame
        and 'hx-swap-oob="true"' in frame
        and "status-streaming" not in frame
    )


@pytest.fixture
async def open_socket(alice_client: Client) -> AsyncIterator[Callable]:
    """Open websockets on conversations as a logged-in browser would; all closed at teardown."""
    sockets: list[ChatSocket] = []

    async def open_(
        conversation: Conversation,
        *,
        client: Client | None = alice_client,
        origin: str = SITE_ORIGIN,
    ) -> ChatSocket:
        headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
        if client is not None:
            session_cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
            cookie = f"{django_settings.SESSION_COOKIE_NAME}={session_cookie}"
            headers.append((b"cookie", cookie.encode()))
        communicator = WebsocketCommunicator(
            application, f"/ws/c/{conversation.pk}/", headers=headers
        )
        socket = ChatSocket(communicator)
        socket.connected, _ = await communicator.connect()
        sockets.append(socket)
        return socket

    yield open_
    for socket in sockets:
        await socket.communicator.disconnect()
