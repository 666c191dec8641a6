"""Shared fixtures: two users, their logged-in clients, conversations, a fake model provider
and websockets watching a conversation the way a chat page does. What they are built from, and
what tests import, is in tests/support/; the browser tests' fixtures are in tests/browser/."""

import asyncio
import functools
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache as django_cache
from django.core.management.commands import flush
from django.db import connections
from django.db.models.signals import post_migrate
from django.test import AsyncClient, Client
from django.utils import timezone
from httpx2._transports import default as httpx_transports
from whitenoise.base import WhiteNoise

from accounts.models import User
from chatsite.asgi import application
from conversations.llm import client
from conversations.models import Conversation, Message
from conversations.replies import running
from tests.support.fake_openai import FakeOpenAI
from tests.support.providers import (
    LOCAL_MODELS,
    ROUTER_KEY,
    ROUTER_MODELS,
    TwoProviders,
    providers_toml,
)
from tests.support.sockets import SITE_ORIGIN, ChatSocket, websocket_path
from tests.support.visitors import PASSWORD

# Every API response a test receives is checked against the OpenAPI schema.
pytest_plugins = ["tests.support.openapi"]


@pytest.fixture(scope="session", autouse=True)
def close_connections_of_async_tests(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Async tests query the database from asgiref's worker thread, outside any request, so
    nothing closes that thread's connection. Close it before the test database is dropped,
    which PostgreSQL refuses while a connection is open."""
    yield
    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())
        connections.close_all()


@pytest.fixture(scope="session", autouse=True)
def flush_puts_back_what_migrate_made(django_db_setup, django_db_blocker) -> Iterator[None]:
    """A transactional test ends with `flush`, which empties every table and then runs the
    post_migrate handlers to make the content types and permissions again: most of what such a
    test's teardown costs. The same rows are put back instead, from a copy taken after migrate,
    which is what those handlers would make."""
    assert len(post_migrate.receivers) == 2, "a new post_migrate handler: put back its rows too"
    with django_db_blocker.unblock():
        made = [list(ContentType.objects.all()), list(Permission.objects.all())]
    original = flush.emit_post_migrate_signal

    def put_back(verbosity: int, interactive: bool, database: str, **kwargs) -> None:
        for rows in made:
            type(rows[0]).objects.using(database).bulk_create(rows)
        ContentType.objects.clear_cache()

    flush.emit_post_migrate_signal = put_back
    yield
    flush.emit_post_migrate_signal = original


@pytest.fixture(scope="session", autouse=True)
def static_files_scanned_once() -> Iterator[None]:
    """WhiteNoise reads the whole of STATIC_ROOT when its middleware is made. A server makes it
    once; Django's test clients make the middleware chain afresh for every client, and the
    rescans took half the CPU of the load test. The tests share one scan per configuration."""
    scanned: dict[tuple, dict] = {}
    original = WhiteNoise.update_files_dictionary

    def update_files_dictionary(self: WhiteNoise, root: str, prefix: str) -> None:
        key = (
            type(self),
            root,
            prefix,
            self.max_age,
            self.index_file,
            self.allow_all_origins,
            self.charset,
            os.stat(root).st_mtime_ns,
        )
        if key not in scanned:
            before = dict(self.files)
            original(self, root, prefix)
            scanned[key] = {
                url: found for url, found in self.files.items() if before.get(url) is not found
            }
        self.files.update(scanned[key])

    WhiteNoise.update_files_dictionary = update_files_dictionary
    yield
    WhiteNoise.update_files_dictionary = original


@pytest.fixture(scope="session", autouse=True)
def one_tls_context_for_every_client() -> Iterator[None]:
    """Each HTTP client the openai SDK makes loads the certificate authorities afresh, some 50 ms,
    and the tests make one or more a test (the model client belongs to the test's event loop).
    They speak plain HTTP to their fake servers: the clients share one verifying context."""
    original = httpx_transports.create_ssl_context

    @functools.cache
    def shared(trust_env: bool) -> ssl.SSLContext:
        return original(verify=True, cert=None, trust_env=trust_env)

    def create_ssl_context(verify=True, cert=None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None:
            return shared(trust_env)
        return original(verify=verify, cert=cert, trust_env=trust_env)

    httpx_transports.create_ssl_context = create_ssl_context
    yield
    httpx_transports.create_ssl_context = original


@pytest.fixture(autouse=True)
def quick_password_hashing(settings) -> None:
    """Most tests create users; the production hasher is slow on purpose
    (tests/support/hashers.py)."""
    settings.PASSWORD_HASHERS = [
        "tests.support.hashers.QuickPBKDF2PasswordHasher",
        *django_settings.PASSWORD_HASHERS,
    ]


@pytest.fixture(autouse=True)
def fast_replies(settings) -> None:
    """The offline model streams without pauses, deltas and flushes come quickly.

    Automatic titles are off: they ask the model in a background task of their own, after the
    reply, which would consume scripted replies and outlive the test.
    """
    settings.CHAT_AUTO_TITLE = False
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
    client._client.cache_clear()
    yield
    running.generations.clear()
    channel_layers.backends.clear()
    client._client.cache_clear()


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


@pytest_asyncio.fixture
async def open_socket(alice_client: Client) -> AsyncIterator[Callable]:
    """Open a conversation page's websocket as a browser would: the URL the page names, the
    page's Origin, the session cookie. Every socket opened is disconnected at teardown."""
    sockets: list[ChatSocket] = []

    async def open_(
        conversation: Conversation,
        *,
        client: Client | None = alice_client,
        origin: str = SITE_ORIGIN,
    ) -> ChatSocket:
        headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
        if client is not None:
            cookie_name = django_settings.SESSION_COOKIE_NAME
            cookie = f"{cookie_name}={client.cookies[cookie_name].value}"
            headers.append((b"cookie", cookie.encode()))
        path = await websocket_path(conversation, client)
        socket = ChatSocket(WebsocketCommunicator(application, path, headers=headers))
        socket.connected, _ = await socket.communicator.connect()
        sockets.append(socket)
        return socket

    yield open_
    for socket in sockets:
        await socket.communicator.disconnect()


@pytest.fixture
def two_providers(settings, tmp_path, monkeypatch) -> Iterator[TwoProviders]:
    """Two OpenAI-compatible servers configured through CHAT_PROVIDERS_FILE, with no OPENAI_*
    provider, and an empty cache of model lists."""
    with (
        FakeOpenAI(models=LOCAL_MODELS) as local,
        FakeOpenAI(models=ROUTER_MODELS, api_key=ROUTER_KEY) as router,
    ):
        file = tmp_path / "providers.toml"
        file.write_text(providers_toml(local, router))
        monkeypatch.setenv("ROUTER_TEST_KEY", ROUTER_KEY)
        settings.OPENAI_API_KEY = ""
        settings.OPENAI_BASE_URL = ""
        settings.OPENAI_MAX_RETRIES = 0
        settings.CHAT_PROVIDERS_FILE = str(file)
        django_cache.clear()
        yield TwoProviders(local, router, file)
        django_cache.clear()
