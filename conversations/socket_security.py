"""Who may open a chat websocket: a page of our own origin.

- The handshake's Origin must be one that Django's CSRF check accepts for a POST
  (`CsrfOriginValidator`): the site's own origin, scheme, host and port, as the request sees
  itself (`SECURE_PROXY_SSL_HEADER`, `USE_X_FORWARDED_HOST`), or one of `CSRF_TRUSTED_ORIGINS`.
  A handshake without an Origin is refused: every browser sends one.
"""

import io
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.utils.http import is_same_domain

# --------------------------------------------------------------------------- #
# The origin of the page
# --------------------------------------------------------------------------- #


def _handshake_request(scope: dict) -> HttpRequest:
    """The handshake as Django would see it as a request: ws is http, wss is https."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return ASGIRequest({**scope, "type": "http", "method": "GET", "scheme": scheme}, io.BytesIO())


def origin_allowed(scope: dict) -> bool:
    """Whether Django's CSRF check would accept a POST from this handshake's Origin.

    Mirrors CsrfViewMiddleware._origin_verified: the request's own origin, an exact entry of
    CSRF_TRUSTED_ORIGINS, or a subdomain of a wildcard entry (`https://*.example.com`) with
    the same scheme.
    """
    request = _handshake_request(scope)
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    try:
        own_origin = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    except DisallowedHost:
        own_origin = None
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin == own_origin or origin in {entry for entry in trusted if "*" not in entry}:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    wildcards = (urlsplit(entry) for entry in trusted if "*" in entry)
    return any(
        entry.scheme == parsed.scheme and is_same_domain(parsed.netloc, entry.netloc.lstrip("*"))
        for entry in wildcards
    )


class CsrfOriginValidator:
    """ASGI middleware: a websocket handshake from an origin CSRF would refuse is denied (403)."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
