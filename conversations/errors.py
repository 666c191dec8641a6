"""What a request that failed is answered: JSON under /api/, whatever the status, and a clear
refusal, at once, when the server is out of database connections.

Django calls these for errors that escape a view or a middleware (`handler400` … `handler500`
in chatsite/urls.py). A reply that cannot be taken because this process streams as many as it
may is refused earlier, before the view reads anything (`refused_when_busy`, on the pages' and
the API's views that start replies).
"""

import functools
import logging
import sys
from enum import StrEnum

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.views import csrf, defaults
from psycopg_pool import PoolTimeout

from conversations.replies import running

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
OVERLOADED_MESSAGE = (
    "The server is too busy to answer right now. Nothing was changed; try again in a few seconds."
)
SERVER_ERROR_MESSAGE = "Something went wrong on the server. Nothing was lost; try again later."


class ErrorCode(StrEnum):
    """The `code` of an API refusal, `{"error": {"code", "message"}}`, or of a reply stream's
    `error` event: what a script may rely on, named once for the views and the OpenAPI schema."""

    BAD_REQUEST = "bad_request"
    BUSY = "busy"
    CSRF_FAILED = "csrf_failed"
    FORBIDDEN = "forbidden"
    INTERRUPTED = "interrupted"
    INVALID = "invalid"
    INVALID_JSON = "invalid_json"
    MESSAGE_TOO_LONG = "message_too_long"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_FOUND = "not_found"
    QUOTA_EXCEEDED = "quota_exceeded"
    REPLY_IN_PROGRESS = "reply_in_progress"
    SERVER_ERROR = "server_error"
    TOO_LARGE = "too_large"
    TOO_MANY_REPLIES = "too_many_replies"
    UNAUTHORIZED = "unauthorized"


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def api_error(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def is_overload(error: BaseException | None) -> bool:
    """Whether `error` is the database pool having no connection to give in time."""
    while error is not None:
        if isinstance(error, PoolTimeout):
            return True
        error = error.__cause__ or error.__context__
    return False


def composer_error(message: str) -> str:
    """The chat page's composer error area saying `message`, swapped in out of band by htmx or
    over the websocket."""
    return render_to_string(
        "conversations/chat.html#composer-errors", {"refusal": message, "oob": True}
    )


def overloaded(
    request: HttpRequest,
    message: str = OVERLOADED_MESSAGE,
    retry_after: int = RETRY_AFTER_SECONDS,
) -> HttpResponse:
    """503 with Retry-After: JSON for the API; for htmx, the composer's error area (the text
    typed stays where it is); else a page."""
    headers = {"Retry-After": str(retry_after)}
    if is_api(request):
        return api_error(503, ErrorCode.BUSY, message, headers)
    # Rendered without the request: its context processors may need the database.
    if request.headers.get("HX-Request"):
        html = composer_error(message)
        headers["HX-Reswap"] = "none"  # only the out-of-band error area is swapped
    else:
        html = render_to_string("503.html", {"message": message})
    return HttpResponse(html, status=503, headers=headers)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_overload(sys.exc_info()[1]):
        return overloaded(request)
    if is_api(request):
        return api_error(500, ErrorCode.SERVER_ERROR, SERVER_ERROR_MESSAGE)
    return defaults.server_error(request)


def api_failure(request: HttpRequest, error: Exception) -> JsonResponse:
    """An API view's unexpected error, answered as JSON even with DEBUG on."""
    if is_overload(error):
        return overloaded(request)
    logger.error("API request %s %s failed", request.method, request.path, exc_info=error)
    return api_error(500, ErrorCode.SERVER_ERROR, SERVER_ERROR_MESSAGE)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return api_error(400, ErrorCode.BAD_REQUEST, "The request could not be understood.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return api_error(403, ErrorCode.FORBIDDEN, "This is not allowed.")
    return defaults.permission_denied(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: under /api/ the API's JSON refusal, elsewhere Django's page."""
    if is_api(request):
        return api_error(403, ErrorCode.CSRF_FAILED, f"CSRF verification failed: {reason}")
    return csrf.csrf_failure(request, reason)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api(request):
        return api_error(404, ErrorCode.NOT_FOUND, "There is no such API endpoint.")
    return defaults.page_not_found(request, exception)


def refused_when_busy(view):
    """Refuse a POST that would start a reply at once, before any database work, when this
    process streams as many replies as it may: 503 with Retry-After (`overloaded`: JSON for the
    API; for htmx the reason under the composer, whose text stays as typed). Outermost, so
    that refusing costs nothing: no session, no credentials read."""

    @functools.wraps(view)
    async def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            try:
                running.ensure_capacity()  # no database work
            except running.ProcessBusy as refusal:
                return overloaded(request, refusal.message, refusal.retry_after)
        return await view(request, *args, **kwargs)

    return guarded
