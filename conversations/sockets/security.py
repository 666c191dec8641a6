"""Who may keep a chat websocket open: a page of our own origin, for as long as its sign-in holds.

- The handshake's Origin must be one that Django's CSRF check accepts for a POST
  (`CsrfOriginValidator`): the site's own origin, scheme, host and port, as the request sees
  itself (`SECURE_PROXY_SSL_HEADER`, `USE_X_FORWARDED_HOST`), or one of `CSRF_TRUSTED_ORIGINS`.
  A handshake without an Origin is refused: every browser sends one.
- While the socket lives, its session is checked again every CHAT_SOCKET_RECHECK_SECONDS as a
  request carrying its cookie would be (`still_signed_in`).
- A sign-in that ends closes its sockets at once, in every process, through the user's group
  (events.SESSION_ENDED): a logout those of its session, a password change, a deactivation or a
  deletion all of the user's. The periodic check catches what no signal tells (a session
  expired, or deleted from the database or by `clearsessions`).
"""

import io
import logging
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user, user_logged_out
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.http import is_same_domain

from conversations.db import unit_of_work
from conversations.replies import events

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- #
# The sign-in, while the socket lives
# --------------------------------------------------------------------------- #


@unit_of_work
def still_signed_in(user_id: int, session_key: str | None) -> bool:
    """Whether a request carrying this session would still be signed in as this user.

    django.contrib.auth.get_user decides, as for any request: the session exists and has not
    expired, the user is active (the backend's own rule), and the session's hash of the
    password matches (a password change ends every session but the one that made it).
    """
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return get_user(SimpleNamespace(session=session)).pk == user_id


def end_sockets(user_id: int, session_key: str | None = None) -> None:
    """Close the user's sockets of one session, or all of them, in every process.

    Best effort: the change that ended the sign-in stands even when the channel layer is down,
    and the sockets' own check closes them within CHAT_SOCKET_RECHECK_SECONDS.
    """
    try:
        async_to_sync(get_channel_layer().group_send)(
            events.user_group(user_id), events.session_ended(session_key)
        )
    except Exception:
        logger.exception("Could not tell the sockets of user %s that a sign-in ended", user_id)


@receiver(user_logged_out, dispatch_uid="chatsite.end_sockets_on_logout")
def _end_sockets_of_session(sender, request, user, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key:
        end_sockets(user.pk, session_key)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="chatsite.note_sign_in_change")
def _note_sign_in_change(sender, instance, raw: bool = False, update_fields=None, **kwargs) -> None:
    """A new password or a deactivation ends the user's sign-ins: noted here, told once saved."""
    if raw or instance.pk is None:
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return  # a login's last_login, a profile setting
    before = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    instance._sign_ins_ended = bool(before) and (
        before["password"] != instance.password or (before["is_active"] and not instance.is_active)
    )


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="chatsite.end_sockets_on_save")
def _end_sockets_after_sign_in_change(sender, instance, **kwargs) -> None:
    if getattr(instance, "_sign_ins_ended", False):
        instance._sign_ins_ended = False
        user_id = instance.pk
        transaction.on_commit(lambda: end_sockets(user_id))


@receiver(
    post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="chatsite.end_sockets_on_delete"
)
def _end_sockets_of_deleted_user(sender, instance, **kwargs) -> None:
    user_id = instance.pk
    transaction.on_commit(lambda: end_sockets(user_id))
