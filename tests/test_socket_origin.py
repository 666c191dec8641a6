"""Which pages may open a signed-in user's websocket: exactly those whose POSTs Django's CSRF
check would take, by scheme, host and port, the site's own origin or CSRF_TRUSTED_ORIGINS."""

from dataclasses import dataclass, field

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.middleware.csrf import CsrfViewMiddleware
from django.test import Client, RequestFactory

from chatsite.asgi import application
from tests.support.sockets import SITE_ORIGIN

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


@dataclass
class Handshake:
    host: str
    origin: str
    tls: bool = False  # wss:// (the server terminates TLS itself)
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def case(handshake: Handshake, accepted: bool, name: str):
    return pytest.param(handshake, accepted, id=name)


CASES = [
    case(Handshake("localhost", "http://localhost"), True, "own-origin"),
    case(Handshake("127.0.0.1:8000", "http://127.0.0.1:8000"), True, "own-origin-and-port"),
    case(Handshake("127.0.0.1:8000", "http://127.0.0.1:9000"), False, "another-port"),
    case(Handshake("127.0.0.1:8000", "http://127.0.0.1"), False, "port-left-out"),
    case(Handshake("localhost", "https://localhost"), False, "https-page-plain-socket"),
    case(Handshake("localhost", "https://localhost", tls=True), True, "wss-from-https"),
    case(Handshake("localhost", "http://localhost", tls=True), False, "wss-from-http"),
    case(
        Handshake(
            "localhost",
            "https://localhost",
            headers={"X-Forwarded-Proto": "https"},
            settings={"SECURE_PROXY_SSL_HEADER": PROXY_SSL_HEADER},
        ),
        True,
        "behind-tls-proxy",
    ),
    case(
        Handshake(
            "localhost",
            "http://localhost",
            headers={"X-Forwarded-Proto": "https"},
            settings={"SECURE_PROXY_SSL_HEADER": PROXY_SSL_HEADER},
        ),
        False,
        "behind-tls-proxy-from-http",
    ),
    case(
        Handshake(
            "127.0.0.1:8001",
            "http://chat.example.com",
            headers={"X-Forwarded-Host": "chat.example.com"},
            settings={"USE_X_FORWARDED_HOST": True, "ALLOWED_HOSTS": ["chat.example.com"]},
        ),
        True,
        "forwarded-host",
    ),
    case(
        Handshake(
            "127.0.0.1:8001",
            "http://chat.example.com",
            headers={"X-Forwarded-Host": "chat.example.com"},
            settings={"ALLOWED_HOSTS": ["chat.example.com", "127.0.0.1"]},
        ),
        False,
        "forwarded-host-not-trusted",
    ),
    case(Handshake("evil.example", "http://evil.example"), False, "host-not-allowed"),
    case(
        Handshake(
            "127.0.0.1:8001",
            "https://chat.example.com",
            settings={"CSRF_TRUSTED_ORIGINS": ["https://chat.example.com"]},
        ),
        True,
        "trusted-origin",
    ),
    case(
        Handshake(
            "127.0.0.1:8001",
            "http://chat.example.com",
            settings={"CSRF_TRUSTED_ORIGINS": ["https://chat.example.com"]},
        ),
        False,
        "trusted-origin-other-scheme",
    ),
    case(
        Handshake(
            "localhost",
            "https://team.example.com",
            settings={"CSRF_TRUSTED_ORIGINS": ["https://*.example.com"]},
        ),
        True,
        "trusted-wildcard",
    ),
    case(
        Handshake(
            "localhost",
            "http://team.example.com",
            settings={"CSRF_TRUSTED_ORIGINS": ["https://*.example.com"]},
        ),
        False,
        "trusted-wildcard-other-scheme",
    ),
    case(
        Handshake(
            "localhost",
            "https://team.example.com:8443",
            settings={"CSRF_TRUSTED_ORIGINS": ["https://*.example.com"]},
        ),
        False,
        "trusted-wildcard-other-port",
    ),
    case(
        Handshake(
            "localhost",
            "https://example.com.evil.example",
            settings={"CSRF_TRUSTED_ORIGINS": ["https://*.example.com"]},
        ),
        False,
        "trusted-wildcard-look-alike",
    ),
    case(Handshake("localhost", "https://evil.example"), False, "another-site"),
    case(Handshake("localhost", "http://localhost.evil.example"), False, "look-alike-host"),
    case(Handshake("localhost", "null"), False, "null-origin"),
]


def over_tls(app):
    """The application as a server terminating TLS hands it a socket: scheme wss."""

    async def wss(scope, receive, send):
        return await app({**scope, "scheme": "wss"}, receive, send)

    return wss


async def opens(handshake: Handshake | None, client: Client, origin: str | None = None) -> bool:
    """Whether the user's socket opens for this handshake; with no handshake, from our own
    page (SITE_ORIGIN) or with `origin`, None for no Origin header at all."""
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    headers = [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())]
    if handshake is None:
        headers.append((b"host", b"localhost"))
        if origin is not None:
            headers.append((b"origin", origin.encode()))
    else:
        headers += [(b"host", handshake.host.encode()), (b"origin", handshake.origin.encode())]
        headers += [
            (name.lower().encode(), value.encode()) for name, value in handshake.headers.items()
        ]
    app = over_tls(application) if handshake and handshake.tls else application
    communicator = WebsocketCommunicator(app, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


def csrf_accepts(handshake: Handshake) -> bool:
    """Whether Django's CSRF check takes the origin of a POST made like this handshake."""
    extra = {
        f"HTTP_{name.upper().replace('-', '_')}": value for name, value in handshake.headers.items()
    }
    request = RequestFactory().post(
        "/", HTTP_HOST=handshake.host, HTTP_ORIGIN=handshake.origin, secure=handshake.tls, **extra
    )
    return CsrfViewMiddleware(lambda request: None)._origin_verified(request)


@pytest.mark.parametrize(("handshake", "accepted"), CASES)
async def test_a_socket_opens_from_exactly_the_origins_csrf_accepts(
    handshake: Handshake, accepted: bool, alice_client: Client, settings
):
    for name, value in handshake.settings.items():
        setattr(settings, name, value)

    assert await opens(handshake, alice_client) is accepted
    assert csrf_accepts(handshake) is accepted


async def test_a_handshake_without_an_origin_is_refused(alice_client: Client):
    # Every browser sends an Origin with a websocket handshake; a client that sends none is
    # asked to name the site's, as the repository's own tools do.
    assert await opens(None, alice_client, origin=SITE_ORIGIN)
    assert not await opens(None, alice_client, origin=None)
