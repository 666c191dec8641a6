"""The API's door: who is calling, with which method, and how a refusal is answered.

A caller is either a signed-in browser session (whose unsafe requests need the CSRF token, as
everywhere on the site) or a holder of a personal API token (`Authorization: Bearer <key>`, see
accounts/backends.py), for whom CSRF does not apply: a browser never sends that header by itself.
Every refusal is JSON, `{"error": {"code", "message"}}`, whatever went wrong.
"""

from collections.abc import Awaitable, Callable
from functools import wraps

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate, get_user_model
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from conversations.errors import ErrorCode, api_error, api_failure, refused_when_busy

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
NOT_FOUND_MESSAGE = "No such conversation."

ApiView = Callable[..., Awaitable[HttpResponse]]
User = get_user_model()


class ApiError(Exception):
    """A refusal, answered as `{"error": {"code", "message"}}` with its HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _unauthorized(message: str) -> JsonResponse:
    return api_error(401, ErrorCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


class _CsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF check, answering the reason for a refusal instead of an HTML page."""

    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def csrf_refusal(request: HttpRequest) -> JsonResponse | None:
    """A session's unsafe request without a valid CSRF token is refused, as on every page."""
    reason = _CsrfCheck(lambda request: HttpResponse()).process_view(request, None, (), {})
    if reason is None:
        return None
    return api_error(403, ErrorCode.CSRF_FAILED, f"CSRF verification failed: {reason}")


def _authenticate(request: HttpRequest) -> User | JsonResponse:
    """The caller: the owner of a bearer token, else the session's user; or a refusal."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, key = header.partition(" ")
        is_bearer = scheme.lower() == "bearer"
        user = authenticate(request, api_token=key.strip()) if is_bearer else None
        if user is None:
            return _unauthorized("The API token is missing, unknown or revoked.")
        return user
    user = request.user
    if not user.is_authenticated:
        return _unauthorized("Sign in, or send a personal API token as a Bearer token.")
    if request.method not in SAFE_METHODS:
        refusal = csrf_refusal(request)
        if refusal:
            return refusal
    return user


def api_view(*methods: str, starts_replies: bool = False) -> Callable[[ApiView], ApiView]:
    """An API endpoint taking `methods`: authenticated, CSRF-checked for sessions, errors as
    JSON. The view is called as `view(request, user, **kwargs)`. With `starts_replies`, a POST
    is refused with a 503 before anything else when the process is at CHAT_MAX_REPLIES.

    Http404 (conversations/access.py: another user's conversation, or none) is the same
    `not_found` for every endpoint."""

    def decorate(view: ApiView) -> ApiView:
        @csrf_exempt
        @wraps(view)
        async def endpoint(request: HttpRequest, **kwargs) -> HttpResponse:
            # Credentials (and a session's CSRF token) first, as Django checks the token before
            # any view runs: a forged request learns nothing, not even which methods exist.
            try:
                user = await sync_to_async(_authenticate)(request)
            except Exception as error:
                return api_failure(request, error)
            if isinstance(user, HttpResponse):
                return user
            if request.method not in methods:
                response = api_error(
                    405, ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here."
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return await view(request, user, **kwargs)
            except ApiError as error:
                return api_error(error.status, error.code, error.message, error.headers)
            except Http404:
                return api_error(404, ErrorCode.NOT_FOUND, NOT_FOUND_MESSAGE)
            except Exception as error:
                return api_failure(request, error)

        endpoint.api_methods = methods
        return refused_when_busy(endpoint) if starts_replies else endpoint

    return decorate
